"""Shared fixtures: ground-truth data (tests/data/) and an isolated cache."""

from __future__ import annotations

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
