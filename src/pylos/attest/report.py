"""Simulated EREPORT: the 432-byte REPORT an enclave makes for a target enclave (docs/formats.md).

REPORT = report body (the caller's identity with its report_data) ‖ KEYID ‖ AES-128-CMAC over
the body under the *target's* report key. Only the target (whose EGETKEY(REPORT) gives the
same key, `pylos.sgx.egetkey.report_key`) can check the MAC: a report is local attestation
between two enclaves on one (here: simulated) platform, not remote evidence.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import replace
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.cmac import CMAC

from pylos.sgx.egetkey import report_key
from pylos.sgx.structs import ReportBody, TargetInfo

if TYPE_CHECKING:
    from pylos.attest.platform import SimulatedPlatform

REPORT_SIZE = 432
KEY_ID_SIZE = 32
MAC_SIZE = 16
REPORT_DATA_SIZE = 64


class ReportError(ValueError):
    """A REPORT or its inputs are malformed, or its MAC does not verify."""


def _cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(AES(key))
    mac.update(data)
    return mac.finalize()


def with_report_data(enclave: ReportBody, report_data: bytes) -> ReportBody:
    """`enclave`'s body carrying `report_data` (at most 64 bytes, zero-padded like Gramine)."""
    if len(report_data) > REPORT_DATA_SIZE:
        raise ReportError(f"report_data is {len(report_data)} bytes, at most "
                          f"{REPORT_DATA_SIZE} fit in a report")
    return replace(enclave, report_data=report_data.ljust(REPORT_DATA_SIZE, b"\0"))


def make_report(platform: SimulatedPlatform, enclave: ReportBody, target_info: bytes,
                report_data: bytes) -> bytes:
    """EREPORT by `enclave` for the enclave named by `target_info` (512-byte TARGETINFO)."""
    try:
        target = TargetInfo.unpack(target_info)
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    body = with_report_data(enclave, report_data).pack()
    # EREPORT draws a fresh KEYID per report; the target feeds it back into its EGETKEY.
    key_id = secrets.token_bytes(KEY_ID_SIZE)
    return body + key_id + _cmac(report_key(platform.secret, target, key_id), body)


def verify_report(platform: SimulatedPlatform, verifier: ReportBody, report: bytes) -> ReportBody:
    """The body of `report` if its MAC verifies under `verifier`'s report key (the verifier
    must be the report's target), else ReportError."""
    if len(report) != REPORT_SIZE:
        raise ReportError(f"a REPORT is {REPORT_SIZE} bytes, got {len(report)}")
    body, key_id, mac = report[:384], report[384:416], report[416:]
    expected = _cmac(report_key(platform.secret, TargetInfo.of(verifier), key_id), body)
    if not hmac.compare_digest(expected, mac):
        raise ReportError("REPORT MAC does not verify: the report was not made for this "
                          "enclave on this (simulated) platform, or it was altered")
    return ReportBody.unpack(body)
