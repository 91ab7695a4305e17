"""`pylos pf encrypt/decrypt` vs the raw AES-GCM speed of `cryptography` on the same data.

Rows, each the median of the repetitions (alternating, same process, same plaintext):
  - raw AES-GCM, one key, 1 MiB calls: the library's peak (the "raw" of issue 4's goal);
  - raw AES-GCM, a fresh key per 4 KiB node: the floor of the format itself (Gramine gives
    every node its own random key; this is just the AESGCM calls, no file format);
  - pylos.pf encrypt_stream/decrypt_stream, memory to memory (memfd): format + crypto;
  - ProtectedFile (random access, what encrypted mounts use): 128 KiB sequential reads and
    writes (with the final crash-safe flush), random 4 KiB reads, memory to memory;
  - `pylos pf encrypt`/`decrypt` end to end on disk files (interpreter start, reads, writes,
    fsync and rename of the output);
  - copy + fsync of the plaintext file: the I/O floor the end-to-end rows share.
Goal (issue 4): pylos pf >= 50 % of raw.

    .venv/bin/python bench/pf_crypt.py [--size-mb 256] [--repetitions 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pylos.pf import ProtectedFile, decrypt_stream, encrypt_stream

PYLOS = Path(sys.executable).with_name("pylos")
IV = bytes(12)


class _Discard(io.RawIOBase):
    def write(self, data) -> int:  # type: ignore[override]
        return len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--dir", default=None, help="Where the files go [default: $TMPDIR].")
    args = parser.parse_args()
    size = args.size_mb << 20
    work = Path(tempfile.mkdtemp(prefix="pylos-pf-bench-", dir=args.dir))
    try:
        plain_file = work / "plain.bin"
        with open(plain_file, "wb") as f:
            for _ in range(size >> 20):
                f.write(os.urandom(1 << 20))
        plain = plain_file.read_bytes()
        view = memoryview(plain)
        key_file = work / "wrap.key"
        key_file.write_bytes(os.urandom(16))
        key = key_file.read_bytes()
        enc_file = work / "enc.pf"
        subprocess.run([PYLOS, "pf", "encrypt", "-w", key_file, "-i", plain_file, "-o",
                        enc_file], check=True, capture_output=True)
        encrypted_fd = os.memfd_create("pf-bench-src")
        encrypt_stream(io.BytesIO(plain), size, encrypted_fd, key, "bench")

        def raw_big() -> None:
            aead = AESGCM(key)
            for offset in range(0, size, 1 << 20):
                aead.encrypt(IV, view[offset:offset + (1 << 20)], None)

        def raw_nodes() -> None:
            keys = os.urandom(16 * (size // 4096))
            for offset in range(0, size, 4096):
                k = offset >> 8
                AESGCM(keys[k:k + 16]).encrypt(IV, view[offset:offset + 4096], None)

        # destinations in memory, allocated once: the rows measure format + crypto, not the
        # kernel zeroing 256 MiB of fresh pages
        target_fd = os.memfd_create("pf-bench-dst")
        encrypt_stream(io.BytesIO(plain), size, target_fd, key, "bench")

        def lib_encrypt() -> None:
            encrypt_stream(io.BytesIO(plain), size, target_fd, key, "bench")

        def lib_decrypt() -> None:
            decrypt_stream(encrypted_fd, _Discard(), key, "bench", "bench")

        def pf_sequential_read() -> None:
            with ProtectedFile.open(encrypted_fd, key, "bench", readonly=True) as pf:
                for offset in range(0, size, 128 << 10):
                    pf.read(offset, 128 << 10)

        def pf_sequential_write() -> None:
            with ProtectedFile.open(target_fd, key, "bench", create=True) as pf:
                for offset in range(0, size, 128 << 10):
                    pf.write(offset, view[offset:offset + (128 << 10)])

        def cli(mode: str, source: Path) -> Callable[[], None]:
            def run() -> None:
                out = work / f"out-{mode}"
                out.unlink(missing_ok=True)
                subprocess.run([PYLOS, "pf", mode, "-w", key_file, "-i", source, "-o", out],
                               check=True, capture_output=True)
            return run

        def copy_fsync() -> None:
            out = work / "copy.bin"
            out.unlink(missing_ok=True)
            shutil.copyfile(plain_file, out)
            fd = os.open(out, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

        runs: dict[str, Callable[[], None]] = {
            "raw AES-GCM, one key, 1 MiB calls": raw_big,
            "raw AES-GCM, fresh key per 4 KiB node": raw_nodes,
            "pylos.pf encrypt_stream (memory)": lib_encrypt,
            "pylos.pf decrypt_stream (memory)": lib_decrypt,
            "ProtectedFile 128 KiB reads (memory)": pf_sequential_read,
            "ProtectedFile 128 KiB writes (memory)": pf_sequential_write,
            "pylos pf encrypt (CLI, disk, fsync)": cli("encrypt", plain_file),
            "pylos pf decrypt (CLI, disk, fsync)": cli("decrypt", enc_file),
            "cp + fsync (I/O floor)": copy_fsync,
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repetitions):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
        rng = random.Random(0)
        with ProtectedFile.open(encrypted_fd, key, "bench", readonly=True) as pf:
            started = time.perf_counter()
            for _ in range(20000):
                pf.read(rng.randrange(size >> 12) << 12, 4096)
            random_reads = 20000 / (time.perf_counter() - started)
        os.close(encrypted_fd)
        os.close(target_fd)
    finally:
        shutil.rmtree(work)

    medians = {name: statistics.median(t) for name, t in times.items()}
    raw = size / medians["raw AES-GCM, one key, 1 MiB calls"]
    per_node = size / medians["raw AES-GCM, fresh key per 4 KiB node"]
    print(f"\n{args.size_mb} MiB, median of {args.repetitions}, {os.cpu_count()} CPUs "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"  {'':40} {'seconds':>8} {'MB/s':>8} {'% raw':>6} {'% per-node raw':>15}")
    for name, seconds in medians.items():
        rate = size / seconds
        print(f"  {name:40} {seconds:8.3f} {rate / 1e6:8.0f} {100 * rate / raw:5.0f}% "
              f"{100 * rate / per_node:14.0f}%")
    print(f"  ProtectedFile random 4 KiB reads (cache 4 MiB, memory): {random_reads:.0f}/s")


if __name__ == "__main__":
    main()
