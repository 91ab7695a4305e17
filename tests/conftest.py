"""Shared fixtures: ground-truth data (tests/data/) and an isolated cache."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import TESTDATA, run_pylos


@pytest.fixture
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.fail(f"ground-truth data missing: {TESTDATA}")
    return TESTDATA


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                   ) -> Path:
    """Each test gets its own hash cache, so no test passes thanks to another's leftovers."""
    cache = tmp_path_factory.mktemp("pylos-cache")
    monkeypatch.setenv("PYLOS_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def pylos():
    return run_pylos


@pytest.fixture(scope="session")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An enclave signing key (RSA-3072, e = 3) made by `pylos gen-key`, for every test that
    signs."""
    path = tmp_path_factory.mktemp("key") / "enclave-key.pem"
    assert run_pylos("gen-key", str(path)).returncode == 0
    return path


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts (each in its own session): their process groups are killed at
    its end whatever happened."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait()
