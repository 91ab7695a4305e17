"""SIGSTRUCT: the 1808-byte enclave signature structure (`sgx-formats.md` §6).

Signed bytes = [0:128] ‖ [900:1028]; signature = RSASSA-PKCS1-v1.5/SHA-256 with an RSA-3072,
e = 3 key; RSA values are stored little-endian; Q1 = ⌊s²/n⌋, Q2 = ⌊(s² mod n)·s/n⌋ (what EINIT
uses to check the signature without division); MRSIGNER = SHA-256 of the stored modulus.
Verification needs no crypto library: with e = 3 it is one `pow()` and a comparison with the
PKCS#1 v1.5 encoding of the hash, so `pylos run` can check a `.sig` without importing one.
"""

from __future__ import annotations

import datetime
import hashlib
import struct
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pylos.sgx.structs import Attributes

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

SIZE = 1808
KEY_BYTES = 384
HEADER = bytes.fromhex("06000000e10000000000010000000000")
HEADER2 = bytes.fromhex("01010000600000006000000001000000")
NO_ATTRIBUTES = Attributes(0, 0)
DEFAULT_ATTRIBUTE_MASK = Attributes(0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFF9FF1B)
# DER DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1)
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")

_LAYOUT = struct.Struct(
    "<16s"   # 0 header
    "I"      # 16 vendor
    "I"      # 20 date (BCD 0xYYYYMMDD)
    "16s"    # 24 header2
    "I"      # 40 swdefined
    "84x"    # 44 reserved
    "384s"   # 128 modulus
    "I"      # 512 exponent
    "384s"   # 516 signature
    "I"      # 900 miscselect
    "I"      # 904 miscmask
    "B"      # 908 cet_attributes
    "B"      # 909 cet_attributes_mask
    "2x"     # 910 reserved
    "16s"    # 912 isvfamilyid
    "16s"    # 928 attributes
    "16s"    # 944 attributemask
    "32s"    # 960 enclavehash
    "16x"    # 992 reserved
    "16s"    # 1008 isvextprodid
    "H"      # 1024 isvprodid
    "H"      # 1026 isvsvn
    "12x"    # 1028 reserved
    "384s"   # 1040 q1
    "384s"   # 1424 q2
)
assert _LAYOUT.size == SIZE


def _int_le(data: bytes) -> int:
    return int.from_bytes(data, "little")


def _le(value: int) -> bytes:
    return value.to_bytes(KEY_BYTES, "little")


def date_to_bcd(date: datetime.date | None) -> int:
    """2016-12-14 -> 0x20161214 (bytes 14 12 16 20); None (0000-00-00) -> 0."""
    return 0 if date is None else int(f"{date.year:04d}{date.month:02d}{date.day:02d}", 16)


def bcd_to_date(value: int) -> datetime.date | None:
    if value == 0:
        return None
    text = f"{value:08x}"
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise ValueError(f"SIGSTRUCT: invalid BCD date 0x{value:08x}") from None


@dataclass
class Sigstruct:
    enclave_hash: bytes = bytes(32)
    attributes: Attributes = NO_ATTRIBUTES
    attribute_mask: Attributes = DEFAULT_ATTRIBUTE_MASK
    misc_select: int = 0
    misc_mask: int = 0xFFFFFFFF
    isv_prod_id: int = 0
    isv_svn: int = 0
    date: datetime.date | None = None
    vendor: int = 0
    swdefined: int = 0
    cet_attributes: int = 0
    cet_attributes_mask: int = 0
    isv_family_id: bytes = bytes(16)
    isv_ext_prod_id: bytes = bytes(16)
    header: bytes = HEADER
    header2: bytes = HEADER2
    modulus: int = 0
    exponent: int = 3
    signature: int = 0
    q1: int = 0
    q2: int = 0

    def pack(self) -> bytes:
        return _LAYOUT.pack(
            self.header, self.vendor, date_to_bcd(self.date), self.header2, self.swdefined,
            _le(self.modulus), self.exponent, _le(self.signature), self.misc_select,
            self.misc_mask, self.cet_attributes, self.cet_attributes_mask, self.isv_family_id,
            self.attributes.pack(), self.attribute_mask.pack(), self.enclave_hash,
            self.isv_ext_prod_id, self.isv_prod_id, self.isv_svn, _le(self.q1), _le(self.q2),
        )

    @classmethod
    def unpack(cls, data: bytes) -> Sigstruct:
        if len(data) != SIZE:
            raise ValueError(f"a SIGSTRUCT is {SIZE} bytes, got {len(data)}")
        (header, vendor, date, header2, swdefined, modulus, exponent, signature, misc_select,
         misc_mask, cet, cet_mask, family, attributes, attribute_mask, enclave_hash,
         ext_prod, prod, svn, q1, q2) = _LAYOUT.unpack(data)
        if header != HEADER or header2 != HEADER2:
            raise ValueError("not a SIGSTRUCT: the HEADER/HEADER2 constants do not match")
        sigstruct = cls(
            enclave_hash=enclave_hash, attributes=Attributes.unpack(attributes),
            attribute_mask=Attributes.unpack(attribute_mask), misc_select=misc_select,
            misc_mask=misc_mask, isv_prod_id=prod, isv_svn=svn, date=bcd_to_date(date),
            vendor=vendor, swdefined=swdefined, cet_attributes=cet, cet_attributes_mask=cet_mask,
            isv_family_id=family, isv_ext_prod_id=ext_prod, header=header, header2=header2,
            modulus=_int_le(modulus), exponent=exponent, signature=_int_le(signature),
            q1=_int_le(q1), q2=_int_le(q2),
        )
        if sigstruct.pack() != data:
            raise ValueError("SIGSTRUCT: reserved bytes are not zero")
        return sigstruct

    def signed_bytes(self) -> bytes:
        packed = self.pack()
        return packed[0:128] + packed[900:1028]

    def mr_signer(self) -> bytes:
        return hashlib.sha256(_le(self.modulus)).digest()

    def sign(self, private_key: RSAPrivateKey) -> Sigstruct:
        """A copy signed with `private_key` (RSA-3072, e = 3), with Q1/Q2 filled in."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        numbers = private_key.public_key().public_numbers()
        unsigned = replace(self, modulus=numbers.n, exponent=numbers.e)
        signature = private_key.sign(unsigned.signed_bytes(), padding.PKCS1v15(),
                                     hashes.SHA256())
        s = int.from_bytes(signature, "big")
        q1, q2 = rsa_q1_q2(s, numbers.n)
        return replace(unsigned, signature=s, q1=q1, q2=q2)

    def verify(self) -> bool:
        """True if the signature over the signed bytes is valid and Q1/Q2 match it."""
        n, s = self.modulus, self.signature
        if self.exponent != 3 or n.bit_length() != KEY_BYTES * 8 or not 0 < s < n:
            return False
        expected = pkcs1_v15_sha256(hashlib.sha256(self.signed_bytes()).digest())
        return pow(s, 3, n) == expected and rsa_q1_q2(s, n) == (self.q1, self.q2)


def rsa_q1_q2(signature: int, modulus: int) -> tuple[int, int]:
    q1, remainder = divmod(signature * signature, modulus)
    return q1, remainder * signature // modulus


def pkcs1_v15_sha256(digest: bytes) -> int:
    """EMSA-PKCS1-v1_5 encoding of a SHA-256 digest for a 3072-bit modulus, as an integer."""
    payload = SHA256_DIGEST_INFO + digest
    encoded = b"\x00\x01" + b"\xff" * (KEY_BYTES - len(payload) - 3) + b"\x00" + payload
    return int.from_bytes(encoded, "big")
