"""Constants and helpers of the attestation tests (not in conftest.py: test directories each
have a conftest, and `from conftest import` would pick whichever was imported first)."""

from __future__ import annotations

from pylos.sgx.structs import FLAG_DEBUG, FLAG_INIT, FLAG_MODE64BIT, Attributes, ReportBody

from support import TESTDATA

DCAP = TESTDATA / "dcap"
RATLS = TESTDATA / "ratls"
SAMPLE_NOW = 1752919277  # inside the sample collateral's validity window


def identity(mr_enclave: bytes = b"\x11" * 32, debug: bool = False, **fields) -> ReportBody:
    flags = FLAG_INIT | FLAG_MODE64BIT | (FLAG_DEBUG if debug else 0)
    return ReportBody(cpu_svn=bytes([2] * 16), attributes=Attributes(flags, 0xE7),
                      mr_enclave=mr_enclave, mr_signer=b"\x22" * 32, **fields)
