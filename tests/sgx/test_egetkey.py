"""Simulated EGETKEY: fixed layout, policy selection, SVN checks, report keys."""

import pytest

from pylos.sgx.egetkey import (
    SIM_CPU_SVN,
    KeyRequestError,
    egetkey,
    report_key,
    seal_derivation_data,
    sealing_key,
)
from pylos.sgx.structs import (
    FLAG_DEBUG,
    FLAG_INIT,
    KEYNAME_REPORT,
    KEYNAME_SEAL,
    KEYPOLICY_MRSIGNER,
    Attributes,
    KeyRequest,
    ReportBody,
    TargetInfo,
)

SECRET = bytes(range(32))
ENCLAVE = ReportBody(cpu_svn=SIM_CPU_SVN, attributes=Attributes(FLAG_INIT | 0x4, 0x3),
                     mr_enclave=b"\x11" * 32, mr_signer=b"\x22" * 32, isv_prod_id=7, isv_svn=3)


def test_vector_fixes_the_layout() -> None:
    # Any change to the derivation layout or base-key rule changes these and breaks sealed data.
    assert sealing_key(SECRET, ENCLAVE, "mrenclave").hex() == "0a3f9cc26375e7a1f089f6973f0e1255"
    assert sealing_key(SECRET, ENCLAVE, "mrsigner").hex() == "f0ee2b3eeffac7ed605a4470a1610f40"
    assert len(seal_derivation_data(KeyRequest(KEYNAME_SEAL), ENCLAVE)) == 274


def test_mrsigner_key_survives_a_rebuild_mrenclave_key_does_not() -> None:
    rebuilt = ReportBody(**{**ENCLAVE.__dict__, "mr_enclave": b"\x33" * 32})
    assert sealing_key(SECRET, rebuilt, "mrsigner") == sealing_key(SECRET, ENCLAVE, "mrsigner")
    assert sealing_key(SECRET, rebuilt, "mrenclave") != sealing_key(SECRET, ENCLAVE, "mrenclave")


def test_other_signer_product_debug_or_platform_change_the_key() -> None:
    base = sealing_key(SECRET, ENCLAVE, "mrsigner")
    for change in ({"mr_signer": b"\x44" * 32}, {"isv_prod_id": 8},
                   {"attributes": Attributes(FLAG_INIT | FLAG_DEBUG | 0x4, 0x3)}):
        assert sealing_key(SECRET, ReportBody(**{**ENCLAVE.__dict__, **change}), "mrsigner") != base
    assert sealing_key(bytes(32), ENCLAVE, "mrsigner") != base


def test_svn_above_the_current_one_is_refused_older_one_works() -> None:
    older = KeyRequest(KEYNAME_SEAL, KEYPOLICY_MRSIGNER, isv_svn=2, cpu_svn=SIM_CPU_SVN)
    assert len(egetkey(SECRET, older, ENCLAVE)) == 16
    with pytest.raises(KeyRequestError, match="ISVSVN 4"):
        egetkey(SECRET, KeyRequest(KEYNAME_SEAL, KEYPOLICY_MRSIGNER, isv_svn=4), ENCLAVE)
    with pytest.raises(KeyRequestError, match="CPUSVN"):
        egetkey(SECRET, KeyRequest(KEYNAME_SEAL, KEYPOLICY_MRSIGNER, cpu_svn=b"\x03" * 16), ENCLAVE)


def test_report_key_is_the_targets_own_egetkey() -> None:
    key_id = b"\x55" * 32
    target = TargetInfo.of(ENCLAVE)
    assert report_key(SECRET, target, key_id) == egetkey(
        SECRET, KeyRequest(KEYNAME_REPORT, key_id=key_id), ENCLAVE)
    other = TargetInfo(mr_enclave=b"\x66" * 32, attributes=ENCLAVE.attributes)
    assert report_key(SECRET, other, key_id) != report_key(SECRET, target, key_id)


def test_structures_round_trip() -> None:
    target = TargetInfo.of(ENCLAVE)
    assert TargetInfo.unpack(target.pack()) == target and len(target.pack()) == 512
    with pytest.raises(ValueError, match="reserved"):
        TargetInfo.unpack(b"\0" * 48 + b"\1" + b"\0" * 463)
