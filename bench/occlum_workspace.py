"""Occlum-style workspaces (docs/occlum.md): `pylos exec` in a started server vs `pylos run`
cold vs native, for a hello world; and `copy-bom` + `build` of examples/occlum-python, from an
empty hash cache and again with nothing changed, integrity-only and with --image-key.

    .venv/bin/python bench/occlum_workspace.py [--repetitions N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import alternate, print_table, time_command

ROOT = Path(__file__).resolve().parents[1]
PYLOS = str(Path(sys.executable).with_name("pylos"))
HELLO = ROOT / "examples" / "occlum-hello" / "hello_world.c"
PYTHON_EXAMPLE = ROOT / "examples" / "occlum-python"


def pylos(*args: str, cwd: Path, env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run([PYLOS, *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def hello(tmp: Path, repetitions: int) -> None:
    binary = tmp / "hello_world"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(HELLO)], check=True)
    ws = tmp / "hello"
    ws.mkdir()
    pylos("init", cwd=ws)
    shutil.copy(binary, ws / "image" / "bin")
    pylos("build", cwd=ws)
    pylos("start", cwd=ws)
    try:
        series = alternate({
            "native ./hello_world": lambda: time_command([str(binary)]),
            "pylos run /bin/hello_world (cold)": lambda: time_command(
                [PYLOS, "run", "/bin/hello_world"], cwd=ws, stderr=subprocess.DEVNULL),
            "pylos exec /bin/hello_world (server)": lambda: time_command(
                [PYLOS, "exec", "/bin/hello_world"], cwd=ws),
        }, repetitions)
    finally:
        pylos("stop", cwd=ws)
    print_table("hello world (wall time per command)", series)


def python_build(tmp: Path) -> None:
    version = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('%d.%d' % "
                              "sys.version_info[:2])"], capture_output=True, text=True,
                             check=True).stdout.strip()
    key = tmp / "image.key"
    pylos("gen-image-key", str(key), cwd=tmp)
    print("\nexamples/occlum-python: copy-bom + build (s)")
    for label, extra in (("integrity-only", []), ("--image-key", ["--image-key", str(key)])):
        project = tmp / f"py-{label.strip('-')}"
        shutil.copytree(PYTHON_EXAMPLE, project, ignore=shutil.ignore_patterns(
            "occlum_workspace", "OUTPUT"))
        ws = project / "ws"
        ws.mkdir()
        env = {**os.environ, "PYTHON_VERSION": version,
               "PYLOS_CACHE_DIR": str(tmp / f"cache-{label.strip('-')}")}
        pylos("init", cwd=ws, env=env)
        shutil.rmtree(ws / "image")
        for state in ("from nothing", "unchanged"):
            copy = pylos("copy-bom", "-f", "../python.yaml", "--root", "image", cwd=ws, env=env)
            build = pylos("build", *extra, cwd=ws, env=env)
            print(f"  {label:<15} {state:<13} copy-bom {copy:6.2f}   build {build:6.2f}")
        files = sum(1 for p in (ws / "image").rglob("*") if p.is_file())
    print(f"  ({files} files in the image)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repetitions", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pylos-bench-ws-") as tmp:
        hello(Path(tmp), args.repetitions)
        python_build(Path(tmp))


if __name__ == "__main__":
    main()
