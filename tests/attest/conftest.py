"""Fixtures for the attestation tests: a simulated platform of their own, enclave identities."""

from __future__ import annotations

from pathlib import Path

import pytest

from pylos.attest.platform import PLATFORM_DIR_ENV, SimulatedPlatform
from pylos.sgx.structs import FLAG_DEBUG, FLAG_INIT, FLAG_MODE64BIT, Attributes, ReportBody

from support import TESTDATA

DCAP = TESTDATA / "dcap"
RATLS = TESTDATA / "ratls"
SAMPLE_NOW = 1752919277  # inside the sample collateral's validity window


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


def identity(mr_enclave: bytes = b"\x11" * 32, debug: bool = False, **fields) -> ReportBody:
    flags = FLAG_INIT | FLAG_MODE64BIT | (FLAG_DEBUG if debug else 0)
    return ReportBody(cpu_svn=bytes([2] * 16), attributes=Attributes(flags, 0xE7),
                      mr_enclave=mr_enclave, mr_signer=b"\x22" * 32, **fields)
