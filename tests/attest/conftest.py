"""Fixtures for the attestation tests: a simulated platform of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from pylos.attest.platform import PLATFORM_DIR_ENV, SimulatedPlatform


@pytest.fixture(scope="session")
def platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attest") / "sim-platform"


@pytest.fixture(autouse=True)
def _platform_env(platform_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SimulatedPlatform() and every `pylos` subprocess uses the tests' platform."""
    monkeypatch.setenv(PLATFORM_DIR_ENV, str(platform_dir))


@pytest.fixture
def platform(platform_dir: Path) -> SimulatedPlatform:
    return SimulatedPlatform(platform_dir)
