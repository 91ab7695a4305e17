#!/usr/bin/env python3
"""The start-up cost of the verified-view design that lost: trusted files materialised as
verified copies in a private tmpfs *before* the program starts (no FUSE server: the kernel
serves the copies, nothing to verify later).

For each manifest given, every trusted file is copied into a fresh directory of /dev/shm and
hashed, as such a start would have to (it cannot know which files the program will use): the
seconds and bytes are that design's floor per `pylos run`. The verified view (the design on
main) hashes only what the program looks up; compare with `bench/run`'s start-up rows.

    .venv/bin/python bench/view_designs.py examples/helloworld/helloworld.manifest \\
        examples/python/python.manifest
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
import tomllib


def materialise(manifest: str) -> tuple[int, int, float]:
    """(files, bytes, seconds) to copy and hash every trusted file of `manifest`."""
    with open(manifest, "rb") as f:
        trusted = tomllib.load(f).get("sgx", {}).get("trusted_files", [])
    paths = [t["uri"] if isinstance(t, dict) else t for t in trusted]
    paths = [p.removeprefix("file:") for p in paths]
    target = tempfile.mkdtemp(dir="/dev/shm", prefix="pylos-materialised-")
    files = size = 0
    start = time.perf_counter()
    try:
        for index, path in enumerate(paths):
            if not os.path.isfile(path):
                continue
            copy = os.path.join(target, str(index))
            shutil.copyfile(path, copy)
            with open(copy, "rb") as f:
                hashlib.file_digest(f, "sha256")
            files += 1
            size += os.path.getsize(copy)
        return files, size, time.perf_counter() - start
    finally:
        shutil.rmtree(target)


def main() -> None:
    for manifest in sys.argv[1:]:
        files, size, seconds = materialise(manifest)
        print(f"{manifest}: {files} trusted files, {size / 2**20:.1f} MiB copied and hashed "
              f"in {seconds * 1000:.0f} ms")


if __name__ == "__main__":
    main()
