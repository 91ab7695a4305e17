"""Signing a manifest: final `.manifest.sgx` bytes -> MRENCLAVE -> signed SIGSTRUCT.

What `gramine-sgx-sign` does, over the pylos enclave layout (`pylos.sgx.layout`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pylos import install
from pylos.errors import InputError, PylosError
from pylos.hashing import HashCache, ProgressCallback
from pylos.manifest import Manifest
from pylos.sgx.layout import measure_enclave
from pylos.sgx.sigstruct import Sigstruct
from pylos.sgx.structs import (
    FLAG_DEBUG,
    FLAG_MODE64BIT,
    MISCSELECT_EXINFO,
    XFRM_AMX,
    XFRM_AVX,
    XFRM_AVX512,
    XFRM_LEGACY,
    XFRM_MPX,
    XFRM_PKRU,
    Attributes,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

FLAGS_MASK = 0xFFFFFFFFFFFFFFFF
XFRM_MASK = 0xFFFFFFFFFFF9FF1B
MISC_MASK = 0xFFFFFFFF
CPU_FEATURE_BITS = {"avx": XFRM_AVX, "avx512": XFRM_AVX512, "amx": XFRM_AMX, "mpx": XFRM_MPX,
                    "pkru": XFRM_PKRU}


def parse_date(text: str | None) -> datetime.date | None:
    """`--date`: YYYY-MM-DD, `today` (default; SOURCE_DATE_EPOCH if set), or 0000-00-00."""
    if text is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        if epoch is not None:
            try:
                return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC).date()
            except ValueError:
                raise PylosError(f"SOURCE_DATE_EPOCH={epoch!r} is not a unix time") from None
        text = "today"
    if text == "today":
        return datetime.date.today()
    if text == "0000-00-00":
        return None
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise PylosError(f"--date {text!r}: expected YYYY-MM-DD, 'today' or 0000-00-00") from None


def enclave_attributes(manifest: Manifest) -> tuple[Attributes, Attributes, int]:
    """(ATTRIBUTES, ATTRIBUTEMASK, MISCSELECT) from the manifest, as Gramine computes them."""
    sgx = manifest.sgx
    flags = FLAG_MODE64BIT | (FLAG_DEBUG if sgx["debug"] else 0)
    xfrm, xfrm_mask = XFRM_LEGACY, XFRM_MASK
    for feature, bits in CPU_FEATURE_BITS.items():
        setting = sgx["cpu_features"][feature]
        if setting == "required":
            xfrm |= bits
            xfrm_mask |= bits
        elif setting == "disabled":
            xfrm &= ~bits
            xfrm_mask |= bits
    misc = MISCSELECT_EXINFO if sgx["use_exinfo"] else 0
    return Attributes(flags, xfrm), Attributes(FLAGS_MASK, xfrm_mask), misc


def libos_hash_of(manifest: Manifest) -> bytes:
    entrypoint = manifest.data["loader"]["entrypoint"]
    if entrypoint.get("uri") != install.LIBOS_URI:
        raise InputError(
            f"loader.entrypoint.uri = {entrypoint.get('uri')!r} names another LibOS; pylos "
            f"signs enclaves of its own LibOS ({install.LIBOS_URI!r}): remove loader.entrypoint"
        )
    try:
        digest = bytes.fromhex(entrypoint["sha256"])
    except (KeyError, ValueError):
        digest = b""
    if len(digest) != 32:
        raise InputError("loader.entrypoint.sha256 must be 64 hex digits")
    return digest


def measure(manifest_sgx: bytes, manifest: Manifest) -> bytes:
    """MRENCLAVE of the enclave that `manifest_sgx` (the exact bytes of `manifest`) defines."""
    return measure_enclave(manifest_sgx, libos_hash_of(manifest), manifest.enclave_size,
                           manifest.max_threads, manifest.edmm)


@dataclass
class SignedEnclave:
    manifest_sgx: bytes
    sigstruct: Sigstruct

    @property
    def mr_enclave(self) -> bytes:
        return self.sigstruct.enclave_hash

    @property
    def mr_signer(self) -> bytes:
        return self.sigstruct.mr_signer()


def sign_manifest(
    manifest: Manifest,
    key: RSAPrivateKey,
    date: datetime.date | None,
    chroot: Path | None = None,
    cache: HashCache | None = None,
    progress: Callable[[int], ProgressCallback | None] | None = None,
) -> SignedEnclave:
    """Validate, expand and hash trusted files, measure, and sign. Writes nothing."""
    manifest.check()
    for field in ("isvprodid", "isvsvn"):
        if not 0 <= manifest.sgx[field] <= 0xFFFF:
            raise InputError(f"sgx.{field} must be between 0 and 65535 "
                             f"(got {manifest.sgx[field]})")
    manifest.expand_all_trusted_files(chroot, cache, progress)
    manifest_sgx = manifest.dumps().encode()
    attributes, attribute_mask, misc_select = enclave_attributes(manifest)
    sigstruct = Sigstruct(
        enclave_hash=measure(manifest_sgx, manifest),
        attributes=attributes,
        attribute_mask=attribute_mask,
        misc_select=misc_select,
        misc_mask=MISC_MASK,
        isv_prod_id=manifest.sgx["isvprodid"],
        isv_svn=manifest.sgx["isvsvn"],
        date=date,
    )
    sigstruct.sign(key)
    return SignedEnclave(manifest_sgx, sigstruct)
