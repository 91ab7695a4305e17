"""`pylos manifest` on Gramine's python template vs `sha256sum` over the same files.

The python template trusts the interpreter's whole sys.path plus the arch lib dirs: thousands of
files. Measured, alternating, with the page cache warm for both sides:
  - sha256sum: `xargs sha256sum` over exactly the files the rendered manifest lists (and the
    same with `openssl dgst`, which uses the CPU's SHA extensions as Python's hashlib does);
  - pylos cold: `pylos manifest` with an empty hash cache (every inode hashed);
  - pylos warm: `pylos manifest` again with the cache from a previous run.
Goal (issue 2): pylos cold <= 1.5x sha256sum.

    .venv/bin/python bench/manifest_hash.py [--repetitions N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from timing import alternate, print_table, time_command

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "python"
PYLOS = Path(sys.executable).with_name("pylos")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()

    python3 = os.path.realpath(shutil.which("python3", path="/usr/bin") or shutil.which("python3"))
    work = Path(tempfile.mkdtemp(prefix="pylos-bench-"))
    try:
        shutil.copytree(EXAMPLE, work / "python")
        workdir = work / "python"
        argv = [str(PYLOS), "manifest", "-Dlog_level=error", "-Darch_libdir=/lib/x86_64-linux-gnu",
                f"-Dentrypoint={python3}", "-Dra_type=dcap", "python.manifest.template",
                "python.manifest"]
        warm_cache = work / "warm-cache"
        env = dict(os.environ, PYLOS_CACHE_DIR=str(warm_cache))
        subprocess.run(argv, cwd=workdir, check=True, env=env)  # also warms the page cache
        manifest = tomllib.loads((workdir / "python.manifest").read_text())
        files = [os.path.join(workdir, entry["uri"].removeprefix("file:"))
                 for entry in manifest["sgx"]["trusted_files"]]
        file_list = work / "files.txt"
        file_list.write_text("\n".join(files) + "\n")
        size = sum(os.path.getsize(f) for f in files)
        print(f"python template: {len(files)} trusted files, {size / 2**20:.0f} MiB "
              f"(entrypoint {python3})")

        def cold() -> float:
            cache = work / "cold-cache"
            shutil.rmtree(cache, ignore_errors=True)
            return time_command(argv, cwd=workdir, env=dict(os.environ, PYLOS_CACHE_DIR=str(cache)))

        series = alternate(
            {
                "xargs sha256sum (same files)": lambda: time_command(
                    ["sh", "-c", f"xargs -d '\\n' sha256sum < {file_list}"]),
                # coreutils' sha256sum does not use the CPU's SHA extensions; OpenSSL does.
                "xargs openssl dgst -sha256 (same files)": lambda: time_command(
                    ["sh", "-c", f"xargs -d '\\n' openssl dgst -sha256 < {file_list}"]),
                "pylos manifest, empty hash cache": cold,
                "pylos manifest, warm hash cache": lambda: time_command(argv, cwd=workdir, env=env),
            },
            args.repetitions,
        )
        print_table("Rendering Gramine's python template (ratio vs sha256sum, same run)", series)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
