"""Paths and helpers shared by the tests (importable as `support`: tests/ is on sys.path)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TESTDATA = PROJECT_ROOT / "tests" / "data"  # ground truth kept in the repository (README there)
GRAMINE_TEMPLATES = TESTDATA / "gramine-templates"
EXAMPLES = PROJECT_ROOT / "examples"
PYLOS = str(Path(sys.executable).with_name("pylos"))


def gramine_template(name: str) -> str:
    """A Gramine CI-Examples template, verbatim (e.g. "python/python.manifest.template")."""
    path = GRAMINE_TEMPLATES / name
    if not path.is_file():
        raise LookupError(f"Gramine template {name} not found in {GRAMINE_TEMPLATES}")
    return path.read_text()


def run_pylos(*args: str, cwd: Path | None = None, env: dict | None = None,
              input: str | None = None) -> subprocess.CompletedProcess:
    """Run the installed `pylos` command as a user would."""
    return subprocess.run([PYLOS, *args], cwd=cwd, capture_output=True, text=True, input=input,
                          env={**os.environ, **(env or {})}, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    """Until something listens on `port` of the loopback; AssertionError if `process` (the
    server, its stderr piped) exits first or nothing listens after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def read_protected(path: str | os.PathLike, bound: str, key: bytes) -> bytes:
    """The plaintext of the protected file at `path` (bound to `bound`), opened as `pylos pf
    decrypt` does: read-only, an interrupted flush replayed in memory."""
    from pylos.pf import ProtectedFile

    fd = os.open(path, os.O_RDONLY)
    try:
        with ProtectedFile.open(fd, key, bound, readonly=True) as pf:
            return pf.read(0, pf.size)
    finally:
        os.close(fd)
