from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pylos.errors import PylosError
from pylos.sgx import keys

from support import TESTDATA

SIGSTRUCT_DATA = TESTDATA / "sigstruct"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return keys.generate_signing_key()


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    """A second, cheap key: write_signing_key does not validate what it writes."""
    return rsa.generate_private_key(public_exponent=3, key_size=1024)


def pem(private_key, fmt=serialization.PrivateFormat.PKCS8, encryption=None) -> bytes:
    return private_key.private_bytes(serialization.Encoding.PEM, fmt,
                                     encryption or serialization.NoEncryption())


def test_generated_key_is_rsa3072_e3(key):
    assert key.key_size == 3072 and key.public_key().public_numbers().e == 3


def test_write_is_0600_traditional_pem_and_loads_back(tmp_path: Path, key):
    path = tmp_path / "sub" / "enclave-key.pem"
    keys.write_signing_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert keys.load_signing_key(path).private_numbers() == key.private_numbers()
    assert [p.name for p in path.parent.iterdir()] == ["enclave-key.pem"]  # no temp file left


def test_write_refuses_overwrite_unless_forced(tmp_path: Path, key, other_key):
    path = tmp_path / "enclave-key.pem"
    keys.write_signing_key(path, key)
    before = path.read_bytes()
    with pytest.raises(PylosError, match="already exists; use --force") as info:
        keys.write_signing_key(path, other_key)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    keys.write_signing_key(path, other_key, force=True)
    assert path.read_bytes() == pem(other_key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["enclave-key.pem"]


def test_write_into_unwritable_place_is_a_pylos_error(tmp_path: Path, key):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PylosError, match="cannot write signing key"):
        keys.write_signing_key(blocker / "key.pem", key)


@pytest.fixture(scope="module")
def bad_keys() -> dict[str, bytes]:
    rsa_e3_2048 = rsa.generate_private_key(public_exponent=3, key_size=2048)
    rsa_e65537 = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return {
        "garbage": b"hello",
        "public": rsa_e3_2048.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "encrypted": pem(rsa_e3_2048, encryption=serialization.BestAvailableEncryption(b"pw")),
        "ec": pem(ec.generate_private_key(ec.SECP256R1())),
        "rsa2048": pem(rsa_e3_2048),
        "e65537": pem(rsa_e65537),
    }


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "cannot read signing key"),
        ("directory", "cannot read signing key"),
        ("garbage", "is not a PEM private key"),
        ("public", "is not a PEM private key"),
        ("encrypted", "is encrypted"),
        ("ec", "is not an RSA key"),
        ("rsa2048", "is RSA-2048; SGX needs RSA-3072"),
        ("e65537", "expected public exponent 3 (as SGX requires), got 65537"),
    ],
)
def test_load_errors_are_specific(tmp_path: Path, bad_keys, case, message):
    path = tmp_path / "key.pem"
    if case == "directory":
        path.mkdir()
    elif case != "missing":
        path.write_bytes(bad_keys[case])
    with pytest.raises(PylosError, match=re.escape(message)) as info:
        keys.load_signing_key(path)
    assert str(path) in str(info.value)


def test_sig1_test_key_loads():
    assert keys.load_signing_key(SIGSTRUCT_DATA / "sig1.key.pem").key_size == 3072


def test_pkcs8_key_loads(tmp_path: Path, key):
    path = tmp_path / "key.pem"
    path.write_bytes(pem(key))
    assert keys.load_signing_key(path).private_numbers() == key.private_numbers()
