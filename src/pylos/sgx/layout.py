"""The pylos enclave layout: which pages MRENCLAVE measures (documented in
docs/enclave-layout.md; the layout version is part of the measured libos page).

Top-down from `enclave_size`, as Gramine places its areas: the manifest (bytes + NUL, R), one
libos page (R|X: magic, layout version, EDMM flag, thread count, LibOS hash), then per thread a
TCS page and its SSA (2 frames of 1 page, RW). The heap is not EADDed: pylos runs no code in a
measured region and `enclave_size` is measured by ECREATE; 262 144 EADD records for a 1 GiB
heap would tax every `pylos run` that re-checks a measurement.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pylos.errors import PylosError
from pylos.sgx.measure import Measurement
from pylos.sgx.structs import (
    PAGE_SIZE,
    SECINFO_PT_REG,
    SECINFO_PT_TCS,
    SECINFO_R,
    SECINFO_W,
    SECINFO_X,
)

LAYOUT_VERSION = 1
SSA_FRAME_PAGES = 1
SSA_FRAMES = 2
LIBOS_MAGIC = b"PYLOSLIB"
LIBOS_PAGE = struct.Struct("<8sIII32s")
# TCS: state, flags, OSSA, CSSA, NSSA, OENTRY, AEP, OFSBASE, OGSBASE, OFSLIMIT, OGSLIMIT
TCS = struct.Struct("<QQQIIQQQQII")


@dataclass(frozen=True)
class Area:
    name: str
    offset: int
    size: int
    flags: int
    content: bytes | None  # None: zero pages

    def describe(self) -> str:
        perms = "".join(c if self.flags & bit else "-"
                        for c, bit in (("R", SECINFO_R), ("W", SECINFO_W), ("X", SECINFO_X)))
        kind = "TCS" if self.flags & SECINFO_PT_TCS else "REG"
        return f"{self.offset:#014x}-{self.offset + self.size:#014x} {kind} {perms} {self.name}"


def _pages(size: int) -> int:
    return -(-size // PAGE_SIZE) * PAGE_SIZE


def enclave_areas(manifest_bytes: bytes, libos_hash: bytes, enclave_size: int,
                  max_threads: int, edmm: bool) -> list[Area]:
    """The measured areas, highest address first; validates the layout inputs."""
    if enclave_size <= 0 or enclave_size & (enclave_size - 1):
        raise PylosError(f"sgx.enclave_size: Enclave size must be a power of two "
                         f"(got {enclave_size:#x})")
    if max_threads < 1:
        raise PylosError(f"sgx.max_threads must be at least 1 (got {max_threads})")
    if len(libos_hash) != 32:
        raise PylosError("loader.entrypoint.sha256 must be a 32-byte SHA-256")

    areas: list[Area] = []
    top = enclave_size

    def place(name: str, size: int, flags: int, content: bytes | None) -> int:
        nonlocal top
        top -= _pages(size)
        if top < 0:
            raise PylosError(f"sgx.enclave_size {enclave_size:#x} is too small for the manifest "
                             f"and {max_threads} threads")
        areas.append(Area(name, top, _pages(size), flags, content))
        return top

    place("manifest", len(manifest_bytes) + 1, SECINFO_PT_REG | SECINFO_R, manifest_bytes + b"\0")
    libos = LIBOS_PAGE.pack(LIBOS_MAGIC, LAYOUT_VERSION, int(edmm), max_threads, libos_hash)
    libos_offset = place("libos", PAGE_SIZE, SECINFO_PT_REG | SECINFO_R | SECINFO_X, libos)
    ssa_size = SSA_FRAMES * SSA_FRAME_PAGES * PAGE_SIZE
    for thread in range(max_threads):
        ssa_offset = place(f"ssa[{thread}]", ssa_size, SECINFO_PT_REG | SECINFO_R | SECINFO_W,
                           None)
        tcs = TCS.pack(0, 0, ssa_offset, 0, SSA_FRAMES, libos_offset, 0, 0, 0, 0xFFF, 0xFFF)
        place(f"tcs[{thread}]", PAGE_SIZE, SECINFO_PT_TCS, tcs)
    return areas


def measure_enclave(manifest_bytes: bytes, libos_hash: bytes, enclave_size: int,
                    max_threads: int, edmm: bool) -> bytes:
    """MRENCLAVE of a pylos enclave."""
    areas = enclave_areas(manifest_bytes, libos_hash, enclave_size, max_threads, edmm)
    measurement = Measurement()
    measurement.ecreate(SSA_FRAME_PAGES, enclave_size)
    for area in sorted(areas, key=lambda a: a.offset):
        if area.content is None:
            measurement.add_zero_pages(area.offset, area.size // PAGE_SIZE, area.flags)
        else:
            measurement.add_pages(area.offset, area.content, area.flags)
    return measurement.digest()
