"""Shared fixtures: ground-truth data from ../shared (read in place) and an isolated cache."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
TESTDATA = SHARED / "testdata"
SPECS = SHARED / "specs"
EXAMPLES = PROJECT_ROOT / "examples"


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


def gramine_template(name: str) -> str:
    """A Gramine CI-Examples template, verbatim from the manifest spec (§9), read in place."""
    text = (SPECS / "gramine-manifest.md").read_text()
    match = re.search(rf"### `{re.escape(name)}`\n+```toml\n(.*?)```", text, re.S)
    if match is None:
        raise LookupError(f"template {name} not found in {SPECS / 'gramine-manifest.md'}")
    return match.group(1)
