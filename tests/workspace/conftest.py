"""Workspace fixtures: a signing key, the test program, and built workspaces."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

from pylos.runtime.doctor import FOR_TESTS, missing_features
from pylos.workspace.launch import stop_server
from pylos.workspace.workspace import build_workspace, init_workspace

PROGRAM = Path(__file__).parent / "programs" / "wsprog.c"


@pytest.fixture(scope="session")
def platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim-platform")


@pytest.fixture(autouse=True)
def one_platform(platform_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process builds and `pylos` subprocesses must share one simulated platform (its
    secret derives the writable layer's sealing key), wherever each locates its own."""
    monkeypatch.setenv("PYLOS_PLATFORM_DIR", str(platform_dir))


@pytest.fixture(scope="session")
def wsprog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wsprog") / "wsprog"
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(PROGRAM)],
                   check=True)
    return out


@pytest.fixture
def enclave_support() -> None:
    missing = missing_features(FOR_TESTS)
    if missing:
        pytest.fail("this kernel cannot run pylos enclaves: " + "; ".join(missing))


@pytest.fixture
def workspace(tmp_path: Path, key: Path, wsprog: Path, enclave_support: None):
    """A built workspace with /bin/wsprog (init's loader + libc are all it needs)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    init_workspace(ws)
    (ws / "image" / "bin" / "wsprog").write_bytes(wsprog.read_bytes())
    (ws / "image" / "bin" / "wsprog").chmod(0o755)
    build_workspace(ws, key)
    yield ws
    with contextlib.suppress(Exception):
        stop_server(ws, grace=2.0)
