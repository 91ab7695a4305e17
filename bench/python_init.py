#!/usr/bin/env python3
"""`pylos python init`'s manifest against Gramine's python example manifest, same app, same
venv: Gramine's `scripts/test-numpy.py` (a numpy dot product) with numpy installed by pip into
a venv on /usr/bin/python3 (the interpreter Gramine's Makefile picks).

Gramine's template (examples/python) trusts whole directories: its entrypoint's sys.path
(here the venv's site-packages), the runtime dir, arch_libdir and /usr/arch_libdir. It
knows no venvs: Python finds its venv through pyvenv.cfg, which that template neither mounts
nor trusts, so two lines add it (VENV_LINES below; nothing else changes). init's manifest
trusts what one native run loaded.

    .venv/bin/python bench/python_init.py [--repetitions N]

Prints, for each manifest: trusted files, their MiB, the .manifest.sgx size, the time of
`pylos manifest` + `pylos sign` with an empty hash cache, the bytes `pylos run` hashed, the
first `pylos run` (parsed-manifest cache empty) and the median of N more; native first.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import Series, alternate, time_command

ROOT = Path(__file__).resolve().parents[1]
PYLOS = str(Path(sys.executable).with_name("pylos"))
ARCH_LIBDIR = "/lib/x86_64-linux-gnu"
ENTRY_MOUNT = '  { path = "{{ entrypoint }}", uri = "file:{{ entrypoint }}" },\n'
ENTRY_TRUST = '  "file:{{ entrypoint }}",\n'
VENV_LINES = {
    ENTRY_MOUNT: '  { path = "{{ venv }}/pyvenv.cfg", uri = "file:{{ venv }}/pyvenv.cfg" },\n',
    ENTRY_TRUST: '  "file:{{ venv }}/pyvenv.cfg",\n',
}


def gramine_template_for_venv() -> str:
    """Gramine's python template with VENV_LINES added after the entrypoint's lines."""
    text = (ROOT / "examples" / "python" / "python.manifest.template").read_text()
    for after, line in VENV_LINES.items():
        if after not in text:
            raise SystemExit(f"examples/python/python.manifest.template has no line {after!r}")
        text = text.replace(after, after + line, 1)
    return text


def timed(argv: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def describe(manifest: Path) -> tuple[int, int]:
    entries = tomllib.loads(manifest.read_text())["sgx"]["trusted_files"]
    size = sum(os.stat(manifest.parent / e["uri"].removeprefix("file:")).st_size
               for e in entries)
    return len(entries), size


def hashed_at_start(argv: list[str], cwd: Path, env: dict) -> int:
    result = subprocess.run([PYLOS, "run", "--log-level", "debug", *argv], cwd=cwd, env=env,
                            capture_output=True, text=True, check=True)
    match = re.search(r"trusted files verified in this run: (\d+) bytes", result.stderr)
    return int(match.group(1)) if match else -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=10)
    options = parser.parse_args()
    base = os.path.realpath("/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                            else sys._base_executable)
    work = Path(tempfile.mkdtemp(prefix="pylos-bench-pyinit-"))
    try:
        env = {**os.environ, "PYLOS_CACHE_DIR": str(work / "cache")}
        key = work / "key.pem"
        subprocess.run([PYLOS, "gen-key", str(key)], check=True, capture_output=True)
        venv = work / "venv"
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
        subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                        "install", "-q", "--disable-pip-version-check", "numpy"], check=True)
        python = str(venv / "bin" / "python")

        gramine = work / "gramine"
        shutil.copytree(ROOT / "examples" / "python", gramine, ignore=shutil.ignore_patterns(
            "*.manifest", "*.manifest.sgx", "*.sig", "OUTPUT*"))
        (gramine / "python.manifest.template").write_text(gramine_template_for_venv())
        build_gramine = timed(
            ["sh", "-c", f"{PYLOS} manifest -Dlog_level=error -Darch_libdir={ARCH_LIBDIR} "
             f"-Dentrypoint={python} -Dvenv={venv} -Dra_type=none python.manifest.template "
             f"python.manifest && {PYLOS} sign -k {key} -m python.manifest"], gramine, env)

        mine = work / "init"
        mine.mkdir()
        app = mine / "test-numpy.py"
        shutil.copy(gramine / "scripts" / "test-numpy.py", app)
        init_start = time.perf_counter()
        subprocess.run([PYLOS, "python", "init", str(app), "--venv", str(venv)], cwd=mine,
                       env=env, check=True, capture_output=True)
        init_time = time.perf_counter() - init_start
        build_mine = timed(
            ["sh", "-c", f"{PYLOS} manifest test-numpy.manifest.template test-numpy.manifest "
             f"&& {PYLOS} sign -k {key} -m test-numpy.manifest"], mine, env)

        runs = {
            "native": ([python, "scripts/test-numpy.py"], gramine),
            "Gramine's python template": ([PYLOS, "run", "./python", "scripts/test-numpy.py"],
                                          gramine),
            "pylos python init": ([PYLOS, "run", "test-numpy"], mine),
        }
        quiet = {"env": env, "stderr": subprocess.DEVNULL}
        first = {name: time_command(argv, cwd=cwd, **quiet)
                 for name, (argv, cwd) in runs.items()}
        series: list[Series] = alternate(
            {name: (lambda argv=argv, cwd=cwd: time_command(argv, cwd=cwd, **quiet))
             for name, (argv, cwd) in runs.items()}, options.repetitions)

        rows = [("Gramine's python template", gramine / "python.manifest",
                 ["./python", "scripts/test-numpy.py"], gramine, build_gramine),
                ("pylos python init", mine / "test-numpy.manifest", ["test-numpy"], mine,
                 build_mine)]
        print(f"venv on {base}, numpy installed by pip; {options.repetitions} "
              "alternating runs each after a first one; init's native trace took "
              f"{init_time:.2f} s")
        print(f"{'':<28}{'trusted files':>14}{'trusted MiB':>12}{'.sgx MiB':>10}"
              f"{'build s':>9}{'hashed MiB':>11}{'first run':>11}{'median run':>12}")
        native = series[0]
        print(f"{'native':<28}{'':>14}{'':>12}{'':>10}{'':>9}{'':>11}"
              f"{first['native'] * 1000:>9.0f}ms{native.median * 1000:>10.0f}ms")
        for (name, manifest, argv, cwd, build), s in zip(rows, series[1:], strict=True):
            count, size = describe(manifest)
            sgx = Path(f"{manifest}.sgx").stat().st_size
            hashed = hashed_at_start(argv, cwd, env)
            print(f"{name:<28}{count:>14}{size / 2**20:>12.1f}{sgx / 2**20:>10.2f}"
                  f"{build:>9.2f}{hashed / 2**20:>11.1f}{first[name] * 1000:>9.0f}ms"
                  f"{s.median * 1000:>10.0f}ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
