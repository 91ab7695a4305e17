"""SIGSTRUCT: the 1808-byte enclave signature structure (docs/formats.md).

Signed bytes = [0:128] ‖ [900:1028]; signature = RSASSA-PKCS1-v1.5/SHA-256 with an RSA-3072,
e = 3 key; RSA values are stored little-endian; Q1 = ⌊s²/n⌋, Q2 = ⌊(s² mod n)·s/n⌋ (what EINIT
uses to check the signature without division); MRSIGNER = SHA-256 of the stored modulus.
Verification needs no crypto library: with e = 3 it is one `pow()` and a comparison with the
PKCS#1 v1.5 encoding of the hash, so `pylos run` can check a `.sig` without importing one; only
`sign()` imports `cryptography`.
"""

from __future__ import annotations

import datetime
import hashlib
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pylos.errors import InputError
from pylos.sgx.structs import Attributes, check_lengths

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

SIZE = 1808
KEY_BITS = 3072
KEY_BYTES = KEY_BITS // 8
PUBLIC_EXPONENT = 3
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
    """Inverse of `date_to_bcd`; InputError (a ValueError) for a value that is not a BCD
    calendar date."""
    if value == 0:
        return None
    text = f"{value:08x}"
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise InputError(f"SIGSTRUCT: DATE 0x{value:08x} is not a BCD date YYYYMMDD") from None


@dataclass
class Sigstruct:
    """Every field of the 1808-byte layout, in layout order; reserved bytes are always zero."""

    header: bytes = HEADER
    vendor: int = 0
    date: datetime.date | None = None
    header2: bytes = HEADER2
    swdefined: int = 0
    modulus: int = 0
    exponent: int = PUBLIC_EXPONENT
    signature: int = 0
    misc_select: int = 0
    misc_mask: int = 0xFFFFFFFF
    cet_attributes: int = 0
    cet_attributes_mask: int = 0
    isv_family_id: bytes = bytes(16)
    attributes: Attributes = NO_ATTRIBUTES
    attribute_mask: Attributes = DEFAULT_ATTRIBUTE_MASK
    enclave_hash: bytes = bytes(32)
    isv_ext_prod_id: bytes = bytes(16)
    isv_prod_id: int = 0
    isv_svn: int = 0
    q1: int = 0
    q2: int = 0

    def pack(self) -> bytes:
        check_lengths("SIGSTRUCT", header=(self.header, 16), header2=(self.header2, 16),
                      isv_family_id=(self.isv_family_id, 16),
                      enclave_hash=(self.enclave_hash, 32),
                      isv_ext_prod_id=(self.isv_ext_prod_id, 16))
        return _LAYOUT.pack(
            self.header, self.vendor, date_to_bcd(self.date), self.header2, self.swdefined,
            _le(self.modulus), self.exponent, _le(self.signature), self.misc_select,
            self.misc_mask, self.cet_attributes, self.cet_attributes_mask, self.isv_family_id,
            self.attributes.pack(), self.attribute_mask.pack(), self.enclave_hash,
            self.isv_ext_prod_id, self.isv_prod_id, self.isv_svn, _le(self.q1), _le(self.q2),
        )

    @classmethod
    def unpack(cls, data: bytes) -> Sigstruct:
        """Parse a SIGSTRUCT; InputError (a ValueError, exit status 1) says what makes `data`
        not one."""
        if len(data) != SIZE:
            raise InputError(f"a SIGSTRUCT is {SIZE} bytes, got {len(data)}")
        (header, vendor, date, header2, swdefined, modulus, exponent, signature, misc_select,
         misc_mask, cet, cet_mask, family, attributes, attribute_mask, enclave_hash,
         ext_prod, prod, svn, q1, q2) = _LAYOUT.unpack(data)
        for name, found, expected in (("HEADER", header, HEADER), ("HEADER2", header2, HEADER2)):
            if found != expected:
                raise InputError(f"not a SIGSTRUCT: {name} is {found.hex()}, "
                                 f"expected {expected.hex()}")
        sigstruct = cls(
            header=header, vendor=vendor, date=bcd_to_date(date), header2=header2,
            swdefined=swdefined, modulus=_int_le(modulus), exponent=exponent,
            signature=_int_le(signature), misc_select=misc_select, misc_mask=misc_mask,
            cet_attributes=cet, cet_attributes_mask=cet_mask, isv_family_id=family,
            attributes=Attributes.unpack(attributes),
            attribute_mask=Attributes.unpack(attribute_mask), enclave_hash=enclave_hash,
            isv_ext_prod_id=ext_prod, isv_prod_id=prod, isv_svn=svn, q1=_int_le(q1),
            q2=_int_le(q2),
        )
        repacked = sigstruct.pack()
        if repacked != data:
            first = next(i for i, (a, b) in enumerate(zip(repacked, data, strict=True)) if a != b)
            raise InputError(f"SIGSTRUCT: reserved byte at offset {first} is not zero")
        return sigstruct

    def signed_bytes(self) -> bytes:
        packed = self.pack()
        return packed[0:128] + packed[900:1028]

    def mr_signer(self) -> bytes:
        return hashlib.sha256(_le(self.modulus)).digest()

    def sign(self, private_key: RSAPrivateKey) -> None:
        """Sign in place with `private_key` (RSA-3072, e = 3): sets MODULUS, EXPONENT, SIGNATURE,
        Q1 and Q2."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        numbers = private_key.public_key().public_numbers()
        if private_key.key_size != KEY_BITS or numbers.e != PUBLIC_EXPONENT:
            raise ValueError(f"SGX signs with RSA-{KEY_BITS}, e={PUBLIC_EXPONENT}; got "
                             f"RSA-{private_key.key_size}, e={numbers.e}")
        self.modulus, self.exponent = numbers.n, numbers.e
        signature = private_key.sign(self.signed_bytes(), padding.PKCS1v15(), hashes.SHA256())
        self.signature = int.from_bytes(signature, "big")
        self.q1, self.q2 = rsa_q1_q2(self.signature, self.modulus)

    def verify(self) -> bool:
        """True if the signature over the signed bytes is valid and Q1/Q2 match it."""
        n, s = self.modulus, self.signature
        if self.exponent != PUBLIC_EXPONENT or n.bit_length() != KEY_BITS or not 0 < s < n:
            return False
        expected = pkcs1_v15_sha256(hashlib.sha256(self.signed_bytes()).digest())
        return pow(s, PUBLIC_EXPONENT, n) == expected and rsa_q1_q2(s, n) == (self.q1, self.q2)


def rsa_q1_q2(signature: int, modulus: int) -> tuple[int, int]:
    """Q1 = ⌊s²/n⌋ and Q2 = ⌊(s² mod n)·s/n⌋."""
    q1, remainder = divmod(signature * signature, modulus)
    return q1, remainder * signature // modulus


def pkcs1_v15_sha256(digest: bytes) -> int:
    """EMSA-PKCS1-v1_5 encoding of a SHA-256 digest for a 3072-bit modulus, as an integer."""
    payload = SHA256_DIGEST_INFO + digest
    encoded = b"\x00\x01" + b"\xff" * (KEY_BYTES - len(payload) - 3) + b"\x00" + payload
    return int.from_bytes(encoded, "big")
