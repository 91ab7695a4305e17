from __future__ import annotations

import datetime
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from pylos.sgx.sigstruct import (
    HEADER,
    SIZE,
    Sigstruct,
    bcd_to_date,
    pkcs1_v15_sha256,
    rsa_q1_q2,
)
from pylos.sgx.structs import Attributes

from support import TESTDATA

SIGSTRUCT_DATA = TESTDATA / "sigstruct"
FILES = ["test_enclave.sig", "sig1.sigstruct.bin"]
# SHA-256 DigestInfo prefix, spelled out here rather than taken from the module under test.
DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def load(name: str) -> bytes:
    return (SIGSTRUCT_DATA / name).read_bytes()


def le(name: str) -> int:
    return int.from_bytes(load(name), "little")


@pytest.fixture(scope="module")
def sig1_key() -> rsa.RSAPrivateKey:
    return load_pem_private_key(load("sig1.key.pem"), None)


def test_test_enclave_sig_fields():
    raw = load("test_enclave.sig")
    s = Sigstruct.unpack(raw)
    assert s.enclave_hash.hex() == "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc"
    assert s.mr_signer().hex() == "fb4bab3d6036ac1d730fa83d7366df1dd2dfeac194ef335d6854d8a6c6475542"
    assert s.date == datetime.date(2016, 12, 14)
    assert raw[20:24] == bytes([0x14, 0x12, 0x16, 0x20])
    assert s.isv_prod_id == 0xFFFF and s.isv_svn == 0
    assert s.attributes == Attributes(0x4, 0x3)
    assert s.attributes.pack().hex() == "04000000000000000300000000000000"
    assert s.attribute_mask.pack().hex() == "fdffffffffffffff1bffffffffffffff"
    assert s.header == HEADER and s.exponent == 3
    assert s.verify()


def test_sig1_fields():
    s = Sigstruct.unpack(load("sig1.sigstruct.bin"))
    assert s.enclave_hash.hex() == "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"
    assert s.mr_signer().hex() == "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
    assert s.verify()


@pytest.mark.parametrize("name", FILES)
def test_pack_unpack_round_trip(name):
    raw = load(name)
    assert len(raw) == SIZE
    assert Sigstruct.unpack(raw).pack() == raw


def test_resigning_sig1_is_byte_exact(sig1_key):
    raw = load("sig1.sigstruct.bin")
    original = Sigstruct.unpack(raw)
    resigned = Sigstruct.unpack(raw)
    resigned.modulus = resigned.signature = resigned.q1 = resigned.q2 = 0
    resigned.exponent = 0
    resigned.sign(sig1_key)
    assert resigned.modulus == original.modulus and resigned.exponent == 3
    assert resigned.signature.to_bytes(384, "little") == raw[516:900]
    assert resigned.q1.to_bytes(384, "little") == raw[1040:1424]
    assert resigned.q2.to_bytes(384, "little") == raw[1424:1808]
    assert resigned.pack() == raw


def test_signed_bytes_and_mr_signer_positions():
    raw = load("test_enclave.sig")
    s = Sigstruct.unpack(raw)
    assert s.signed_bytes() == raw[0:128] + raw[900:1028]
    assert s.mr_signer() == hashlib.sha256(raw[128:512]).digest()


def test_signature_checks_with_cryptography_too():
    """An independent check of byte order: the stored values are little-endian."""
    raw = load("test_enclave.sig")
    s = Sigstruct.unpack(raw)
    public = rsa.RSAPublicNumbers(3, int.from_bytes(raw[128:512], "little")).public_key()
    public.verify(int.from_bytes(raw[516:900], "little").to_bytes(384, "big"),
                  s.signed_bytes(), padding.PKCS1v15(), hashes.SHA256())


def test_rsa_vector():
    data = load("rsa_vector.data.bin")
    n, sig = le("rsa_vector.key_n.bin"), le("rsa_vector.sig.bin")
    assert len(data) == 32 and n.bit_length() == 3072
    encoded = pow(sig, 3, n).to_bytes(384, "big")
    assert encoded == b"\x00\x01" + b"\xff" * 330 + b"\x00" + DIGEST_INFO + data
    assert pkcs1_v15_sha256(data) == int.from_bytes(encoded, "big")
    assert rsa_q1_q2(sig, n) == (le("rsa_vector.q1.bin"), le("rsa_vector.q2.bin"))
    # The same check through cryptography, with `data` as a prehashed SHA-256 digest.
    rsa.RSAPublicNumbers(3, n).public_key().verify(
        sig.to_bytes(384, "big"), data, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


@pytest.mark.parametrize("offset", [16, 40, 100, 900, 904, 908, 912, 928, 944, 960, 1008, 1024,
                                    1027])
def test_flipped_signed_byte_fails_verification(offset):
    raw = bytearray(load("sig1.sigstruct.bin"))
    raw[offset] ^= 1
    if 44 <= offset < 128:  # reserved: unpack refuses it before verify() is reached
        with pytest.raises(ValueError, match=f"reserved byte at offset {offset}"):
            Sigstruct.unpack(bytes(raw))
        return
    assert not Sigstruct.unpack(bytes(raw)).verify()


@pytest.mark.parametrize("offset", [128, 516, 1040, 1424])
def test_flipped_modulus_signature_or_q_fails_verification(offset):
    raw = bytearray(load("sig1.sigstruct.bin"))
    raw[offset] ^= 1
    assert not Sigstruct.unpack(bytes(raw)).verify()


def test_sign_new_sigstruct_and_refuse_wrong_key(sig1_key):
    s = Sigstruct(enclave_hash=bytes(range(32)), date=datetime.date(2024, 2, 29),
                  isv_prod_id=7, isv_svn=3)
    s.sign(sig1_key)
    assert s.verify() and Sigstruct.unpack(s.pack()) == s
    assert s.pack()[20:24] == bytes([0x29, 0x02, 0x24, 0x20])
    small = rsa.generate_private_key(public_exponent=3, key_size=2048)
    with pytest.raises(ValueError, match="RSA-3072, e=3; got RSA-2048, e=3"):
        Sigstruct().sign(small)


@pytest.mark.parametrize(("data", "message"), [
    (b"\0" * 100, "a SIGSTRUCT is 1808 bytes, got 100"),
    (b"\1" * SIZE, "HEADER is 01010101"),
    (HEADER + bytes(SIZE - 16), "HEADER2 is 00000000"),
])
def test_unpack_rejects_garbage(data, message):
    with pytest.raises(ValueError, match=message):
        Sigstruct.unpack(data)


def test_dates():
    s = Sigstruct(date=None)
    assert s.pack()[20:24] == bytes(4)
    assert Sigstruct.unpack(s.pack()).date is None
    assert bcd_to_date(0x20161214) == datetime.date(2016, 12, 14)
    with pytest.raises(ValueError, match="0x20161314 is not a BCD date"):
        bcd_to_date(0x20161314)
    with pytest.raises(ValueError, match="0x2016121a is not a BCD date"):
        bcd_to_date(0x2016121A)


def test_pack_rejects_wrong_field_lengths():
    with pytest.raises(ValueError, match="enclave_hash must be 32 bytes, got 31"):
        Sigstruct(enclave_hash=bytes(31)).pack()
