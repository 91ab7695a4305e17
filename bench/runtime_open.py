"""The cost of a trapped open and of starting an enclave: native vs `pylos run`.

1. A tight loop of N `openat`+`close` of one file (tests/runtime/programs/openloop.c), timed
   inside the program, in µs per iteration: natively on the host file, and under `pylos run`
   on the same file seen in the view as an allowed file (read-write mount: the fd the
   supervisor opened is injected) and as a trusted file (served from its verified, sealed
   copy). Every `openat` is one seccomp notification, emulated by the Python supervisor.
   Once more with program and supervisor on one CPU (`taskset -c 0`): the two hand-offs per
   notification (RECV, then ADDFD's install in the target) cost far less without waking the
   other, possibly idle, vCPU.
2. `/bin/true` end to end (wall clock of the whole command): natively, and `pylos run` of a
   manifest whose entrypoint is the host's /bin/true; `python3 -I -S -c pass` shows how much
   of that is only the supervisor's interpreter starting.

Runs alternate between contenders (drift hits all alike); medians, min-max and ratios to
native are printed. The machine is shared and noisy: compare ratios from one run.

    .venv/bin/python bench/runtime_open.py [--iterations 20000] [--repetitions 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import Series, alternate, time_command

ROOT = Path(__file__).resolve().parents[1]
OPENLOOP = ROOT / "tests" / "runtime" / "programs" / "openloop.c"
PYLOS = str(Path(sys.executable).with_name("pylos"))

OPENLOOP_TEMPLATE = """\
libos.entrypoint = "/app"
loader.log_level = "error"
loader.env.LD_LIBRARY_PATH = "/lib"
loader.insecure__use_cmdline_argv = true
fs.mounts = [
  { path = "/lib", uri = "file:{{ gramine.runtimedir() }}" },
  { path = "/app", uri = "file:app" },
  { path = "/data", uri = "file:data" },
]
sgx.trusted_files = [ "file:app", "file:trusted.txt", "file:{{ gramine.runtimedir() }}/" ]
sgx.allowed_files = [ "file:data/" ]
"""

TRUE_TEMPLATE = """\
libos.entrypoint = "/bin/true"
loader.log_level = "error"
loader.env.LD_LIBRARY_PATH = "/lib"
fs.mounts = [
  { path = "/lib", uri = "file:{{ gramine.runtimedir() }}" },
  { path = "/bin/true", uri = "file:/bin/true" },
]
sgx.trusted_files = [ "file:/bin/true", "file:{{ gramine.runtimedir() }}/" ]
"""


def pylos(*args: str, cwd: Path) -> None:
    subprocess.run([PYLOS, *args], cwd=cwd, check=True, capture_output=True)


def per_iteration(argv: list[str], cwd: Path | None = None) -> float:
    """The program's own figure, in µs per open+close (a Series sample)."""
    out = subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout
    return float(re.search(r"([\d.]+) us per open\+close", out).group(1)) / 1e6


def show(title: str, unit: str, series: list[Series]) -> None:
    scale = {"us": 1e6, "ms": 1e3}[unit]
    native = series[0]
    print(f"\n{title}")
    for s in series:
        print(f"  {s.name:<38} median {s.median * scale:9.2f} {unit}   "
              f"min-max {min(s.samples) * scale:7.2f}-{max(s.samples) * scale:7.2f}   "
              f"{s.median / native.median:6.2f}x native")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--repetitions", type=int, default=7)
    args = parser.parse_args()
    count = str(args.iterations)

    work = Path(tempfile.mkdtemp(prefix="pylos-bench-open-"))
    os.environ.setdefault("PYLOS_CACHE_DIR", str(work / "cache"))
    try:
        enclave = work / "openloop"
        (enclave / "data").mkdir(parents=True)
        subprocess.run(["cc", "-O2", "-o", str(enclave / "app"), str(OPENLOOP)], check=True)
        for name in ("trusted.txt", "data/allowed.txt"):
            (enclave / name).write_text("a file in the view\n")
        (enclave / "app.manifest.template").write_text(OPENLOOP_TEMPLATE)
        pylos("manifest", "app.manifest.template", "app.manifest", cwd=enclave)
        true = work / "true"
        true.mkdir()
        (true / "true.manifest.template").write_text(TRUE_TEMPLATE)
        pylos("manifest", "true.manifest.template", "true.manifest", cwd=true)

        print(f"kernel {platform.release()}, {os.cpu_count()} CPUs, "
              f"{args.repetitions} alternating repetitions")
        native = [str(enclave / "app"), str(enclave / "data" / "allowed.txt"), count]
        runs = {
            "native": lambda: per_iteration(native),
            "pylos run, allowed file": lambda: per_iteration(
                [PYLOS, "run", "app", "/data/allowed.txt", count], cwd=enclave),
            "pylos run, trusted file": lambda: per_iteration(
                [PYLOS, "run", "app", "/trusted.txt", count], cwd=enclave),
        }
        if shutil.which("taskset"):
            runs["pylos run, allowed file, one CPU"] = lambda: per_iteration(
                ["taskset", "-c", "0", PYLOS, "run", "app", "/data/allowed.txt", count],
                cwd=enclave)
        opens = alternate(runs, args.repetitions)
        show(f"{count} openat+close, timed inside the program, per iteration", "us", opens)

        starts = alternate({
            "native /bin/true": lambda: time_command(["/bin/true"]),
            "pylos run /bin/true": lambda: time_command([PYLOS, "run", "true"], cwd=true),
            "python3 -I -S -c pass (interpreter)": lambda: time_command(
                [sys.executable, "-I", "-S", "-c", "pass"]),
        }, args.repetitions)
        show("/bin/true, end to end (wall clock)", "ms", starts)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
