"""Run a Python app natively, once, with its venv's interpreter, and record what it loads.

The recording is done by `bootstrap.py` inside the app's own interpreter (an audit hook and
`sys.modules`); this module starts it, checks the inputs and turns failures into clear errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pylos.errors import InputError, PylosError

_CALL = '_pylos_trace(*__import__("sys").argv[1:3], __import__("sys").argv[3:])'

# The environment the app gets inside the enclave (the manifest's `loader.env`, which is all
# a Gramine program sees), minus what only matters there: the trace runs in it, so the app
# takes the same paths natively. PYTHONDONTWRITEBYTECODE is left out on purpose: the native
# run is what writes the .pyc files that the manifest then trusts.
ENCLAVE_ENV = {
    # Nothing comes from ~/.local: the enclave has no home directory.
    "PYTHONNOUSERSITE": "1",
    # The C locale stays C: PEP 538's coercion to C.UTF-8 needs the host's
    # /usr/lib/locale/C.utf8, which glibc reads where no Python trace sees it. Python runs in
    # UTF-8 mode in the C locale all the same (PEP 540), natively and inside alike.
    "PYTHONCOERCECLOCALE": "0",
    # Gramine's python example sets it: OpenBLAS/OpenMP (numpy) start as many threads as
    # there are cores otherwise, each with its own stacks in the enclave's address space.
    "OMP_NUM_THREADS": "4",
}


@dataclass(frozen=True)
class Venv:
    """A virtual environment: its root and the interpreter path the app is started with."""

    root: Path
    python: Path

    @property
    def config(self) -> Path:
        return self.root / "pyvenv.cfg"

    @classmethod
    def find(cls, path: str | os.PathLike) -> Venv:
        root = Path(os.path.abspath(path))
        if not root.is_dir():
            raise PylosError(f"--venv {path}: no such directory")
        if not (root / "pyvenv.cfg").is_file():
            raise InputError(f"--venv {path}: not a virtual environment (no pyvenv.cfg); "
                             "create one with: python3 -m venv " + str(path))
        python = root / "bin" / "python"
        if not os.access(python, os.X_OK) or not python.is_file():
            raise InputError(f"--venv {path}: no interpreter at {python}")
        return cls(root, python)


@dataclass(frozen=True)
class Module:
    """An imported module with a file: `origin` (.py, .so, ...), its .pyc and that one's state
    ('valid', 'unchecked', 'stale', 'missing'; None when the module has no source)."""

    name: str
    origin: str
    cached: str | None = None
    pyc: str | None = None
    archive: str | None = None


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    files: tuple[str, ...] | None  # absolute paths from RECORD; None without a file list
    top_level: tuple[str, ...]
    metadata_dir: str | None


@dataclass
class Trace:
    venv: Venv
    app: Path
    args: tuple[str, ...]
    base_prefix: str
    cache_tag: str
    site_packages: tuple[str, ...]
    sys_path: tuple[str, ...]
    modules: list[Module] = field(default_factory=list)
    files_read: list[str] = field(default_factory=list)  # read, never written, regular files
    dlopened: list[str] = field(default_factory=list)
    distributions: list[Distribution] = field(default_factory=list)


def _bootstrap_source() -> str:
    return (Path(__file__).with_name("bootstrap.py")).read_text() + "\n" + _CALL + "\n"


def _tail(text: str, lines: int = 12) -> str:
    kept = text.rstrip().splitlines()[-lines:]
    return "".join(f"\n    {line}" for line in kept)


def trace_app(venv: Venv, app: str | os.PathLike, args: tuple[str, ...] = (),
              timeout: float = 120) -> Trace:
    """Run `app` once with the venv's interpreter and record what it imports and reads."""
    app_path = Path(os.path.abspath(app))
    if not app_path.is_file():
        raise PylosError(f"{app}: no such file" if not app_path.exists()
                         else f"{app}: not a file")
    try:
        app_path.read_bytes()
    except OSError as exc:
        raise PylosError(f"cannot read '{app}': {exc.strerror}") from None
    with tempfile.TemporaryDirectory(prefix="pylos-trace-") as scratch:
        out = os.path.join(scratch, "trace.json")
        command = [str(venv.python), "-c", _bootstrap_source(), out, str(app_path), *args]
        try:
            run = subprocess.run(command, env=ENCLAVE_ENV, capture_output=True, text=True,
                                 errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PylosError(f"{app}: still running after {timeout:g} s when run natively "
                             f"with {venv.python}; init traces an app that finishes "
                             "(--timeout to wait longer)") from None
        except OSError as exc:
            raise PylosError(f"cannot run {venv.python}: {exc.strerror}") from None
        try:
            with open(out) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = None
    if data is not None and "syntax_error" in data:
        raise InputError(f"{app}: {data['syntax_error']}")
    if run.returncode != 0 or data is None:
        raise InputError(f"{app} failed when run natively with {venv.python} (exit status "
                         f"{run.returncode}); init needs a run that succeeds. Its output "
                         f"ends with:{_tail(run.stderr or run.stdout) or ' (nothing)'}")
    return _parse(data, venv, app_path, args)


def _parse(data: dict, venv: Venv, app: Path, args: tuple[str, ...]) -> Trace:
    written = {path for path, writes in data["opened"] if writes}
    files_read: list[str] = []
    for path, _writes in data["opened"]:
        if path in written or path in files_read or path.startswith(("/proc/", "/sys/",
                                                                     "/dev/")):
            continue
        if os.path.isfile(path):
            files_read.append(path)
    return Trace(
        venv=venv, app=app, args=args, base_prefix=data["base_prefix"],
        cache_tag=data["cache_tag"], site_packages=tuple(data["site_packages"]),
        sys_path=tuple(data["sys_path"]),
        modules=[Module(name, m["origin"], m.get("cached"), m.get("pyc"), m.get("archive"))
                 for name, m in sorted(data["modules"].items())],
        files_read=files_read, dlopened=list(dict.fromkeys(data["dlopened"])),
        distributions=[Distribution(d["name"], d["version"],
                                    tuple(d["files"]) if d["files"] is not None else None,
                                    tuple(d["top_level"]), d["metadata_dir"])
                       for d in data["distributions"]],
    )
