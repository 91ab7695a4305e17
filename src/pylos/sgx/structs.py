"""SGX architectural constants and the small structures that pack and unpack themselves.

Bit values follow the Intel SGX SDK (`sgx_attributes.h`, `sgx_report.h`); layouts are
little-endian and packed (docs/formats.md). Byte fields are length-checked when a
structure is built, because `struct` would silently pad or truncate them and produce a report
that hashes differently from what the caller meant.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

# ATTRIBUTES.FLAGS
FLAG_INIT = 0x1
FLAG_DEBUG = 0x2
FLAG_MODE64BIT = 0x4
FLAG_PROVISION_KEY = 0x10
FLAG_EINITTOKEN_KEY = 0x20
FLAG_KSS = 0x80
FLAG_AEX_NOTIFY = 0x400

# ATTRIBUTES.XFRM feature bits (Gramine's names)
XFRM_LEGACY = 0x3
XFRM_AVX = 0x4
XFRM_MPX = 0x18
XFRM_AVX512 = 0xE4
XFRM_PKRU = 0x200
XFRM_AMX = 0x60000

MISCSELECT_EXINFO = 0x1

# SECINFO.FLAGS: permissions and page type (<< 8)
SECINFO_R = 0x1
SECINFO_W = 0x2
SECINFO_X = 0x4
SECINFO_PT_TCS = 0x100
SECINFO_PT_REG = 0x200

PAGE_SIZE = 4096


def check_lengths(what: str, **fields: tuple[bytes, int]) -> None:
    """ValueError naming the first byte field whose length is not the one the layout fixes."""
    for name, (value, size) in fields.items():
        if len(value) != size:
            raise ValueError(f"{what}: {name} must be {size} bytes, got {len(value)}")


@dataclass(frozen=True)
class Attributes:
    """ATTRIBUTES (16 B): FLAGS u64 ‖ XFRM u64."""

    flags: int
    xfrm: int

    FORMAT: ClassVar[struct.Struct] = struct.Struct("<QQ")

    def pack(self) -> bytes:
        return self.FORMAT.pack(self.flags, self.xfrm)

    @classmethod
    def unpack(cls, data: bytes) -> Attributes:
        if len(data) != cls.FORMAT.size:
            raise ValueError(f"ATTRIBUTES must be {cls.FORMAT.size} bytes, got {len(data)}")
        return cls(*cls.FORMAT.unpack(data))

    @property
    def debug(self) -> bool:
        return bool(self.flags & FLAG_DEBUG)


@dataclass(frozen=True)
class ReportBody:
    """The 384-byte report body (SDK `sgx_report_body_t`), shared by REPORTs and quotes."""

    cpu_svn: bytes = bytes(16)
    misc_select: int = 0
    isv_ext_prod_id: bytes = bytes(16)
    attributes: Attributes = Attributes(0, 0)
    mr_enclave: bytes = bytes(32)
    mr_signer: bytes = bytes(32)
    config_id: bytes = bytes(64)
    isv_prod_id: int = 0
    isv_svn: int = 0
    config_svn: int = 0
    isv_family_id: bytes = bytes(16)
    report_data: bytes = bytes(64)

    # Offsets 0, 16, (20 reserved), 32, 48, 64, (96), 128, (160), 192, 256, 258, 260, (262),
    # 304, 320 — docs/formats.md.
    FORMAT: ClassVar[struct.Struct] = struct.Struct("<16sI12x16s16s32s32x32s32x64sHHH42x16s64s")
    SIZE: ClassVar[int] = 384

    def __post_init__(self) -> None:
        check_lengths(
            "report body",
            cpu_svn=(self.cpu_svn, 16), isv_ext_prod_id=(self.isv_ext_prod_id, 16),
            mr_enclave=(self.mr_enclave, 32), mr_signer=(self.mr_signer, 32),
            config_id=(self.config_id, 64), isv_family_id=(self.isv_family_id, 16),
            report_data=(self.report_data, 64),
        )

    def pack(self) -> bytes:
        return self.FORMAT.pack(
            self.cpu_svn, self.misc_select, self.isv_ext_prod_id, self.attributes.pack(),
            self.mr_enclave, self.mr_signer, self.config_id, self.isv_prod_id, self.isv_svn,
            self.config_svn, self.isv_family_id, self.report_data,
        )

    @classmethod
    def unpack(cls, data: bytes) -> ReportBody:
        if len(data) != cls.SIZE:
            raise ValueError(f"report body must be {cls.SIZE} bytes, got {len(data)}")
        (cpu_svn, misc, ext_prod, attrs, mr_enclave, mr_signer, config_id, prod, svn,
         config_svn, family, report_data) = cls.FORMAT.unpack(data)
        return cls(cpu_svn, misc, ext_prod, Attributes.unpack(attrs), mr_enclave, mr_signer,
                   config_id, prod, svn, config_svn, family, report_data)


@dataclass(frozen=True)
class TargetInfo:
    """TARGETINFO (512 B): names the enclave that will verify a REPORT (docs/formats.md)."""

    mr_enclave: bytes = bytes(32)
    attributes: Attributes = Attributes(0, 0)
    config_svn: int = 0
    misc_select: int = 0
    config_id: bytes = bytes(64)

    # 0 MRENCLAVE, 32 ATTRIBUTES, 48 reserved1 (2), 50 CONFIGSVN, 52 MISCSELECT, 56 reserved2 (8),
    # 64 CONFIGID, 128 reserved3 (384).
    FORMAT: ClassVar[struct.Struct] = struct.Struct("<32s16s2xHI8x64s384x")
    SIZE: ClassVar[int] = 512

    def __post_init__(self) -> None:
        check_lengths("target info", mr_enclave=(self.mr_enclave, 32),
                      config_id=(self.config_id, 64))

    def pack(self) -> bytes:
        return self.FORMAT.pack(self.mr_enclave, self.attributes.pack(), self.config_svn,
                                self.misc_select, self.config_id)

    @classmethod
    def unpack(cls, data: bytes) -> TargetInfo:
        if len(data) != cls.SIZE:
            raise ValueError(f"target info must be {cls.SIZE} bytes, got {len(data)}")
        if data[48:50] != bytes(2) or data[56:64] != bytes(8):
            raise ValueError("target info: reserved fields must be zero")
        mr_enclave, attrs, config_svn, misc, config_id = cls.FORMAT.unpack(data)
        return cls(mr_enclave, Attributes.unpack(attrs), config_svn, misc, config_id)

    @classmethod
    def of(cls, body: ReportBody) -> TargetInfo:
        """The TARGETINFO of the enclave that `body` describes (its `my_target_info`)."""
        return cls(body.mr_enclave, body.attributes, body.config_svn, body.misc_select,
                   body.config_id)


KEYNAME_EINITTOKEN = 0
KEYNAME_PROVISION = 1
KEYNAME_PROVISION_SEAL = 2
KEYNAME_REPORT = 3
KEYNAME_SEAL = 4

KEYPOLICY_MRENCLAVE = 0x1
KEYPOLICY_MRSIGNER = 0x2
KEYPOLICY_NOISVPRODID = 0x4
KEYPOLICY_CONFIGID = 0x8
KEYPOLICY_ISVFAMILYID = 0x10
KEYPOLICY_ISVEXTPRODID = 0x20


@dataclass(frozen=True)
class KeyRequest:
    """KEYREQUEST (512 B), the input of EGETKEY (docs/formats.md)."""

    key_name: int
    key_policy: int = 0
    isv_svn: int = 0
    cpu_svn: bytes = bytes(16)
    attribute_mask: Attributes = Attributes(0, 0)
    key_id: bytes = bytes(32)
    misc_mask: int = 0
    config_svn: int = 0

    # 0 KEYNAME, 2 KEYPOLICY, 4 ISVSVN, 6 reserved, 8 CPUSVN, 24 ATTRIBUTEMASK, 40 KEYID,
    # 72 MISCMASK, 76 CONFIGSVN, 78 reserved (434).
    FORMAT: ClassVar[struct.Struct] = struct.Struct("<HHH2x16s16s32sIH434x")
    SIZE: ClassVar[int] = 512

    def __post_init__(self) -> None:
        check_lengths("key request", cpu_svn=(self.cpu_svn, 16), key_id=(self.key_id, 32))

    def pack(self) -> bytes:
        return self.FORMAT.pack(self.key_name, self.key_policy, self.isv_svn, self.cpu_svn,
                                self.attribute_mask.pack(), self.key_id, self.misc_mask,
                                self.config_svn)

    @classmethod
    def unpack(cls, data: bytes) -> KeyRequest:
        if len(data) != cls.SIZE:
            raise ValueError(f"key request must be {cls.SIZE} bytes, got {len(data)}")
        name, policy, svn, cpu_svn, mask, key_id, misc_mask, config_svn = cls.FORMAT.unpack(data)
        return cls(name, policy, svn, cpu_svn, Attributes.unpack(mask), key_id, misc_mask,
                   config_svn)
