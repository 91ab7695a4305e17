from __future__ import annotations

import datetime
import hashlib

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from pylos.sgx.sigstruct import SIZE, Sigstruct, pkcs1_v15_sha256, rsa_q1_q2


def load(testdata, name: str) -> bytes:
    return (testdata / "sigstruct" / name).read_bytes()


def test_test_enclave_sig_fields(testdata):
    raw = load(testdata, "test_enclave.sig")
    s = Sigstruct.unpack(raw)
    assert s.enclave_hash.hex() == "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc"
    assert s.mr_signer().hex() == "fb4bab3d6036ac1d730fa83d7366df1dd2dfeac194ef335d6854d8a6c6475542"
    assert s.date == datetime.date(2016, 12, 14)
    assert raw[20:24] == bytes([0x14, 0x12, 0x16, 0x20])
    assert s.isv_prod_id == 0xFFFF and s.isv_svn == 0
    assert s.attributes.pack().hex() == "04000000000000000300000000000000"
    assert s.attribute_mask.pack().hex() == "fdffffffffffffff1bffffffffffffff"
    assert s.verify()
    assert s.pack() == raw


def test_sig1_fields_and_byte_exact_resigning(testdata):
    raw = load(testdata, "sig1.sigstruct.bin")
    s = Sigstruct.unpack(raw)
    assert s.enclave_hash.hex() == "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"
    assert s.mr_signer().hex() == "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
    assert s.verify()
    key = load_pem_private_key(load(testdata, "sig1.key.pem"), None)
    resigned = Sigstruct.unpack(raw)
    resigned.signature = resigned.q1 = resigned.q2 = resigned.modulus = 0
    resigned = resigned.sign(key)
    assert resigned.signature == s.signature
    assert resigned.q1 == s.q1 and resigned.q2 == s.q2
    assert resigned.pack() == raw
    assert len(raw) == SIZE


def test_rsa_vector(testdata):
    def le(name: str) -> int:
        return int.from_bytes(load(testdata, f"rsa_vector.{name}.bin"), "little")

    data = load(testdata, "rsa_vector.data.bin")
    n, sig = le("key_n"), le("sig")
    assert len(data) == 32
    assert pow(sig, 3, n) == pkcs1_v15_sha256(data)
    assert rsa_q1_q2(sig, n) == (le("q1"), le("q2"))


def test_tampering_breaks_verification(testdata):
    raw = bytearray(load(testdata, "sig1.sigstruct.bin"))
    raw[1024] ^= 1  # ISVPRODID is signed
    assert not Sigstruct.unpack(bytes(raw)).verify()
    raw = bytearray(load(testdata, "sig1.sigstruct.bin"))
    raw[1040] ^= 1  # Q1 no longer matches the signature
    assert not Sigstruct.unpack(bytes(raw)).verify()


def test_mr_signer_is_hash_of_le_modulus(testdata):
    raw = load(testdata, "test_enclave.sig")
    assert Sigstruct.unpack(raw).mr_signer() == hashlib.sha256(raw[128:512]).digest()


@pytest.mark.parametrize(("data", "message"), [
    (b"\0" * 100, "1808 bytes"),
    (b"\1" * SIZE, "HEADER"),
])
def test_unpack_rejects_garbage(data, message):
    with pytest.raises(ValueError, match=message):
        Sigstruct.unpack(data)


def test_zero_date_round_trips():
    s = Sigstruct(date=None)
    assert s.pack()[20:24] == bytes(4)
    assert Sigstruct.unpack(s.pack()).date is None
