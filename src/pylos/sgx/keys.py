"""Enclave signing keys: RSA-3072 with public exponent 3, as SGX requires (PEM files)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pylos.errors import PylosError
from pylos.sgx.sigstruct import KEY_BITS, PUBLIC_EXPONENT

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

def default_key_path() -> Path:
    """Where `pylos gen-key` writes and `pylos sign` looks when no key is named."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "pylos" / "enclave-key.pem"


def generate_signing_key() -> RSAPrivateKey:
    """A fresh RSA-3072 key with e = 3, the only kind EINIT accepts."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=KEY_BITS)


def write_signing_key(path: Path, key: RSAPrivateKey, force: bool = False) -> None:
    """Write `key` as PEM (traditional RSA format, like Gramine) with mode 0600, atomically.

    The temporary file is created 0600 in the target directory, fsynced and renamed over `path`,
    so the key is never readable by others nor seen half-written; an existing key is replaced
    only with `force`, since losing it changes MRSIGNER of everything it signed.
    """
    from cryptography.hazmat.primitives import serialization

    from pylos.hashing import write_atomic

    if os.path.lexists(path) and not force:
        raise PylosError(f"signing key '{path}' already exists; use --force to overwrite it")
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, pem, mode=0o600)
    except OSError as exc:
        raise PylosError(f"cannot write signing key '{path}': {exc}") from None


def load_signing_key(path: Path) -> RSAPrivateKey:
    """Load a PEM signing key, with a specific error for each way it can be unusable."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise PylosError(f"cannot read signing key '{path}': {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise PylosError(f"signing key '{path}' is encrypted; pylos needs an unencrypted "
                         "PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise PylosError(f"signing key '{path}' is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PylosError(f"signing key '{path}' is not an RSA key (SGX needs RSA-3072, e=3)")
    if key.key_size != KEY_BITS:
        raise PylosError(f"signing key '{path}' is RSA-{key.key_size}; SGX needs RSA-{KEY_BITS}")
    exponent = key.public_key().public_numbers().e
    if exponent != PUBLIC_EXPONENT:
        raise PylosError(f"signing key '{path}': expected public exponent {PUBLIC_EXPONENT} "
                         f"(as SGX requires), got {exponent}")
    return key
