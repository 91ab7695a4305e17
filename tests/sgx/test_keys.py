from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pylos.errors import PylosError
from pylos.sgx import keys


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return keys.generate_signing_key()


def pem(private_key) -> bytes:
    return private_key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


def test_generated_key_is_rsa3072_e3(key):
    assert key.key_size == 3072 and key.public_key().public_numbers().e == 3


def test_write_is_0600_and_refuses_overwrite(tmp_path: Path, key):
    path = tmp_path / "sub" / "enclave-key.pem"
    keys.write_signing_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.load_signing_key(path).private_numbers() == key.private_numbers()
    before = path.read_bytes()
    with pytest.raises(PylosError, match="already exists; use --force"):
        keys.write_signing_key(path, keys.generate_signing_key())
    assert path.read_bytes() == before
    keys.write_signing_key(path, key, force=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read signing key"),
        (b"hello", "is not a PEM private key"),
        ("ec", "is not an RSA key"),
        ("rsa2048", "is RSA-2048; SGX needs RSA-3072"),
        ("e65537", "expected public exponent 3 (as SGX requires), got 65537"),
    ],
)
def test_load_errors_are_specific(tmp_path: Path, content, message):
    path = tmp_path / "key.pem"
    if content == "ec":
        path.write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
    elif content == "rsa2048":
        path.write_bytes(pem(rsa.generate_private_key(public_exponent=3, key_size=2048)))
    elif content == "e65537":
        path.write_bytes(pem(rsa.generate_private_key(public_exponent=65537, key_size=3072)))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(PylosError, match=re.escape(message)) as info:
        keys.load_signing_key(path)
    assert str(path) in str(info.value)


def test_sig1_test_key_loads(testdata):
    assert keys.load_signing_key(testdata / "sigstruct" / "sig1.key.pem").key_size == 3072
