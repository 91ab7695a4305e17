"""Encrypted mounts inside `pylos run`: sequential read of a 256 MB encrypted file (first and
cached), and sqlite inserts of 100k rows into an encrypted vs a plain database (one transaction,
and autocommit for a sample). Run: .venv/bin/python bench/pf_runtime.py [--mb 256]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PYLOS = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "pylos")
KEY = "000102030405060708090a0b0c0d0e0f"
TEMPLATE = """\
libos.entrypoint = "/bin/sh"
loader.log_level = "error"
loader.env.LD_LIBRARY_PATH = "/lib:/lib/x86_64-linux-gnu"
loader.env.PATH = "/bin:/usr/bin"
loader.insecure__use_cmdline_argv = true
fs.mounts = [
  { path = "/lib", uri = "file:{{ gramine.runtimedir() }}" },
  { path = "/lib/x86_64-linux-gnu", uri = "file:/lib/x86_64-linux-gnu" },
  { path = "/bin", uri = "file:/bin" },
  { path = "/usr/bin", uri = "file:/usr/bin" },
  { type = "encrypted", path = "/enc", uri = "file:enc/" },
  { path = "/plain", uri = "file:plain/" },
]
fs.insecure__keys.default = "KEY_HEX"
sgx.enclave_size = "1G"
sgx.max_threads = 8
sgx.trusted_files = [ "file:/bin/sh", "file:/bin/dd", "file:/usr/bin/sqlite3",
  "file:{{ gramine.runtimedir() }}/", "file:/lib/x86_64-linux-gnu/" ]
sgx.allowed_files = [ "file:plain/" ]
""".replace("KEY_HEX", KEY)


def run(root: Path, command: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run([PYLOS, "run", "app", "-c", command], cwd=root, capture_output=True,
                            text=True, timeout=1800)
    elapsed = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"failed: {command}\n{result.stderr}")
    return elapsed, result.stdout + result.stderr


def dd_rate(output: str) -> str:
    found = re.findall(r"copied, [\d.]+ s, ([\d.,]+ [kMG]?B/s)", output)
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pf-runtime-"))
    try:
        (root / "enc").mkdir()
        (root / "plain").mkdir()
        (root / "app.manifest.template").write_text(TEMPLATE)
        subprocess.run([PYLOS, "manifest", "app.manifest.template", "app.manifest"], cwd=root,
                       check=True)
        elapsed, _ = run(root, "true")
        print(f"enclave start (no file access): {elapsed * 1000:.0f} ms")
        elapsed, _ = run(root, f"dd if=/dev/zero of=/enc/big bs=1M count={args.mb} 2>/dev/null")
        print(f"write {args.mb} MB encrypted (incl. start, flush): "
              f"{args.mb / elapsed:.0f} MB/s")
        _, out = run(root, "dd if=/enc/big of=/dev/null bs=1M; "
                           "dd if=/enc/big of=/dev/null bs=1M; dd if=/enc/big of=/dev/null bs=1M")
        print(f"sequential read {args.mb} MB (first run: decrypt, then page cache): "
              f"{dd_rate(out)}")
        elapsed, _ = run(root, "dd if=/enc/big of=/dev/null bs=4k count=1 2>/dev/null")
        print(f"run that opens and reads 4 KiB of it (first-open latency incl. start): "
              f"{elapsed * 1000:.0f} ms")
        rows = args.rows
        sql = ("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT);"
               f"BEGIN; WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c "
               f"WHERE x < {rows}) INSERT INTO t (v) SELECT hex(randomblob(16)) FROM c; COMMIT;")
        auto = "CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT);" + \
            "INSERT INTO t (v) VALUES (hex(randomblob(16)));" * 300
        times = {}
        for where in ("enc", "plain"):
            times[where, "txn"], _ = run(root, f"sqlite3 /{where}/one.db '{sql}'")
            times[where, "auto"], _ = run(root, f"sqlite3 /{where}/auto.db '{auto}'")
        for kind, label in (("txn", f"{rows} rows, one transaction"),
                            ("auto", "300 rows, autocommit")):
            enc, plain = times["enc", kind], times["plain", kind]
            print(f"sqlite {label}: encrypted {enc:.2f} s, plain {plain:.2f} s, "
                  f"ratio {enc / plain:.1f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    main()
