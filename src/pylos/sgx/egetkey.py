"""Simulated EGETKEY: deterministic SGX key derivation from the simulated platform's secret.

Real EGETKEY mixes a per-CPU fused secret into AES-CMAC over derivation data; pylos does the
same with the simulated platform's secret (`pylos.attest.platform`) in place of the fuses,
following the Intel SDK simulator (`sdk/simulation/tinst/deriv.cpp`): one base key per key
name, `key = AES-128-CMAC(base_key[KEYNAME], derivation data)`, every field the key policy
excludes zeroed, requested SVNs above the enclave's current ones refused. Simulated keys are
never equal to hardware keys.

Derivation data byte layout (fixed here; `tests/sgx/test_egetkey.py` holds a vector):

    SEAL:   key_name u16 ‖ key_policy u16 ‖ attributes & mask (16) ‖ attribute mask (16) ‖
            misc_select & mask u32 ‖ misc mask u32 ‖ owner_epoch (16) ‖ cpu_svn (16) ‖
            isv_svn u16 ‖ isv_prod_id u16 ‖ config_svn u16 ‖ config_id (64) ‖
            isv_family_id (16) ‖ isv_ext_prod_id (16) ‖ mr_enclave (32) ‖ mr_signer (32) ‖
            key_id (32)                                                          = 274 bytes
    REPORT: key_name u16 ‖ attributes (16) ‖ misc_select u32 ‖ owner_epoch (16) ‖
            mr_enclave (32) ‖ cpu_svn (16) ‖ config_svn u16 ‖ config_id (64) ‖ key_id (32)
                                                                                 = 184 bytes
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from pylos.sgx.structs import (
    FLAG_DEBUG,
    FLAG_INIT,
    KEYNAME_REPORT,
    KEYNAME_SEAL,
    KEYPOLICY_CONFIGID,
    KEYPOLICY_ISVEXTPRODID,
    KEYPOLICY_ISVFAMILYID,
    KEYPOLICY_MRENCLAVE,
    KEYPOLICY_MRSIGNER,
    KEYPOLICY_NOISVPRODID,
    Attributes,
    KeyRequest,
    ReportBody,
    TargetInfo,
)

# The simulated CPU's security version and owner epoch (a real platform reports its own).
SIM_CPU_SVN = bytes([2] * 16)
SIM_OWNER_EPOCH = bytes(16)

# Gramine's sealing-key request masks (`sgx.seal_key.*` defaults).
DEFAULT_SEAL_FLAGS_MASK = 0xFFFFFFFFFFFFFFFF
DEFAULT_SEAL_XFRM_MASK = 0xFFFFFFFFFFF9FF1B
DEFAULT_SEAL_MISC_MASK = 0xFFFFFFFF

_SEAL_DATA = struct.Struct("<HH16s16sII16s16sHHH64s16s16s32s32s32s")
_REPORT_DATA = struct.Struct("<H16sI16s32s16sH64s32s")


class KeyRequestError(ValueError):
    """EGETKEY refused the request (the SDK's SGX_ERROR_INVALID_* cases)."""


def _base_key(platform_secret: bytes, key_name: int) -> bytes:
    return hmac.digest(platform_secret, b"pylos simulated EGETKEY base key %d" % key_name,
                       hashlib.sha256)[:16]


def _cmac(key: bytes, data: bytes) -> bytes:
    # Imported here: every signed `pylos run` imports this module (SIM_CPU_SVN), and only
    # one that derives a key needs the cryptography bindings (~15 ms to import).
    from cryptography.hazmat.primitives.ciphers.algorithms import AES
    from cryptography.hazmat.primitives.cmac import CMAC

    mac = CMAC(AES(key))
    mac.update(data)
    return mac.finalize()


def seal_derivation_data(request: KeyRequest, enclave: ReportBody) -> bytes:
    """The SEAL key's derivation data for `enclave` (the caller) asking `request`."""
    if request.isv_svn > enclave.isv_svn:
        raise KeyRequestError(
            f"requested ISVSVN {request.isv_svn} is above the enclave's {enclave.isv_svn}")
    if request.config_svn > enclave.config_svn:
        raise KeyRequestError(
            f"requested CONFIGSVN {request.config_svn} is above the enclave's {enclave.config_svn}")
    if request.cpu_svn[::-1] > SIM_CPU_SVN[::-1]:
        raise KeyRequestError("requested CPUSVN is above the platform's")
    policy = request.key_policy
    # The SDK simulator always binds INIT and DEBUG: a debug enclave never gets a production key.
    flags_mask = request.attribute_mask.flags | FLAG_INIT | FLAG_DEBUG
    xfrm_mask = request.attribute_mask.xfrm
    masked = Attributes(enclave.attributes.flags & flags_mask, enclave.attributes.xfrm & xfrm_mask)

    def chosen(bit: int, value: bytes) -> bytes:
        return value if policy & bit else bytes(len(value))

    return _SEAL_DATA.pack(
        KEYNAME_SEAL, policy, masked.pack(), Attributes(flags_mask, xfrm_mask).pack(),
        enclave.misc_select & request.misc_mask, request.misc_mask, SIM_OWNER_EPOCH,
        request.cpu_svn, request.isv_svn,
        0 if policy & KEYPOLICY_NOISVPRODID else enclave.isv_prod_id,
        request.config_svn, chosen(KEYPOLICY_CONFIGID, enclave.config_id),
        chosen(KEYPOLICY_ISVFAMILYID, enclave.isv_family_id),
        chosen(KEYPOLICY_ISVEXTPRODID, enclave.isv_ext_prod_id),
        chosen(KEYPOLICY_MRENCLAVE, enclave.mr_enclave),
        chosen(KEYPOLICY_MRSIGNER, enclave.mr_signer), request.key_id,
    )


def report_derivation_data(target: TargetInfo, key_id: bytes) -> bytes:
    """The REPORT key's derivation data: it belongs to the target enclave."""
    return _REPORT_DATA.pack(
        KEYNAME_REPORT, target.attributes.pack(), target.misc_select, SIM_OWNER_EPOCH,
        target.mr_enclave, SIM_CPU_SVN, target.config_svn, target.config_id, key_id,
    )


def egetkey(platform_secret: bytes, request: KeyRequest, enclave: ReportBody) -> bytes:
    """EGETKEY as executed by `enclave` (its identity as a report body): a 16-byte key."""
    if request.key_name == KEYNAME_SEAL:
        data = seal_derivation_data(request, enclave)
    elif request.key_name == KEYNAME_REPORT:
        data = report_derivation_data(TargetInfo.of(enclave), request.key_id)
    else:
        raise KeyRequestError(f"key name {request.key_name} is not available to this enclave")
    return _cmac(_base_key(platform_secret, request.key_name), data)


def report_key(platform_secret: bytes, target: TargetInfo, key_id: bytes) -> bytes:
    """The report key of `target` (what EREPORT MACs with, and what the target's EGETKEY gives)."""
    return _cmac(_base_key(platform_secret, KEYNAME_REPORT), report_derivation_data(target, key_id))


def sealing_key(platform_secret: bytes, enclave: ReportBody, policy: str, *,
                flags_mask: int = DEFAULT_SEAL_FLAGS_MASK, xfrm_mask: int = DEFAULT_SEAL_XFRM_MASK,
                misc_mask: int = DEFAULT_SEAL_MISC_MASK) -> bytes:
    """Gramine's `_sgx_mrenclave` / `_sgx_mrsigner` key: EGETKEY(SEAL), KEYID 0, own SVNs."""
    key_policy = {"mrenclave": KEYPOLICY_MRENCLAVE, "mrsigner": KEYPOLICY_MRSIGNER}[policy]
    request = KeyRequest(
        KEYNAME_SEAL, key_policy, enclave.isv_svn, enclave.cpu_svn,
        Attributes(flags_mask, xfrm_mask), bytes(32), misc_mask, enclave.config_svn,
    )
    return egetkey(platform_secret, request, enclave)
