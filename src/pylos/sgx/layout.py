"""The pylos enclave layout: which pages MRENCLAVE measures. Layout version 1; stable.

pylos defines its own layout, as Gramine does, and measures it with the real SGX records
(`pylos.sgx.measure`). Its inputs are exactly: the final `.manifest.sgx` bytes, the LibOS hash
(`loader.entrypoint.sha256`), `sgx.enclave_size`, `sgx.max_threads` and `sgx.edmm_enable`.

- ECREATE: SSAFRAMESIZE = 1 page, SIZE = `enclave_size` (a power of two, as SGX requires).
- Areas are placed top-down from `enclave_size`, as Gramine places its own:
  1. **manifest**: the manifest bytes and one NUL, zero-padded to whole pages; PT_REG|R. A
     manifest containing a NUL byte is refused, so that no two accepted manifests measure alike.
  2. **libos**: one page, PT_REG|R|X: the magic `PYLOSLIB`, u32 layout version (1), u32 EDMM
     flag (0/1), u32 `max_threads`, the 32-byte LibOS hash, zeros.
  3. per thread, from thread 0 down: one **TCS** page (PT_TCS: OSSA = offset of the thread's
     SSA area, NSSA = 2, OENTRY = offset of the libos page, OFSLIMIT = OGSLIMIT = 0xfff, every
     other field 0), then below it the thread's **SSA** area, 2 frames of 1 page (PT_REG|R|W,
     zero).
- Every page is measured (EADD + 16 EEXTEND); records are emitted in ascending address order.

The heap below the areas is not EADDed: pylos executes no code inside the measured region, and
`enclave_size` already enters the measurement through ECREATE. A 1 GiB enclave would otherwise
take 262 144 EADD records, a cost paid by every `pylos run` that re-checks the measurement.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

from pylos.errors import InputError
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
TCS_SEGMENT_LIMIT = 0xFFF
MANIFEST_FLAGS = SECINFO_PT_REG | SECINFO_R
LIBOS_FLAGS = SECINFO_PT_REG | SECINFO_R | SECINFO_X
SSA_FLAGS = SECINFO_PT_REG | SECINFO_R | SECINFO_W
THREAD_PAGES = 1 + SSA_FRAMES * SSA_FRAME_PAGES


class Area(NamedTuple):
    """One area of the layout, as `pylos sign -v` prints it."""

    name: str
    offset: int
    size: int
    flags: int
    measured: bool

    def describe(self) -> str:
        perms = "".join(c if self.flags & bit else "-"
                        for c, bit in (("R", SECINFO_R), ("W", SECINFO_W), ("X", SECINFO_X)))
        kind = "TCS" if self.flags & SECINFO_PT_TCS else "REG"
        state = "measured" if self.measured else "unmeasured"
        return (f"{self.offset:016x}-{self.offset + self.size:016x} [{kind}:{perms}] "
                f"({self.name}) {state}")


def _pages(size: int) -> int:
    return -(-size // PAGE_SIZE)


def _size_text(size: int) -> str:
    """A power of two of at least 4K in manifest notation ("64K", "2M", "1G")."""
    for suffix, shift in (("G", 30), ("M", 20)):
        if size >= 1 << shift:
            return f"{size >> shift}{suffix}"
    return f"{size >> 10}K"


def _plan(manifest_bytes: bytes, libos_hash: bytes, enclave_size: int, max_threads: int,
          edmm: bool) -> list[tuple[Area, bytes | None]]:
    """The areas top-down with their content (None: zero pages), after validating the inputs."""
    if enclave_size <= 0 or enclave_size & (enclave_size - 1):
        raise InputError(f"sgx.enclave_size: Enclave size must be a power of two "
                         f"(got {enclave_size:#x})")
    if max_threads < 1:
        raise InputError(f"sgx.max_threads must be at least 1 (got {max_threads})")
    if len(libos_hash) != 32:
        raise InputError(f"loader.entrypoint.sha256 must be a 32-byte SHA-256 "
                         f"(got {len(libos_hash)} bytes)")
    if b"\0" in manifest_bytes:
        # The area is NUL-terminated and zero-padded: "m" and "m\0" would measure the same.
        raise InputError(f"the manifest contains a NUL byte (at offset "
                         f"{manifest_bytes.index(0)}); a manifest is TOML text")
    manifest = manifest_bytes + b"\0"
    needed = (_pages(len(manifest)) + 1 + max_threads * THREAD_PAGES) * PAGE_SIZE
    if needed > enclave_size:
        minimum = 1 << (needed - 1).bit_length()
        raise InputError(
            f"sgx.enclave_size = {enclave_size:#x} is too small: the manifest, the libos page and "
            f"{max_threads} thread(s) need {needed:#x} bytes; use at least "
            f'sgx.enclave_size = "{_size_text(minimum)}"'
        )

    plan: list[tuple[Area, bytes | None]] = []
    top = enclave_size

    def place(name: str, size: int, flags: int, content: bytes | None) -> int:
        nonlocal top
        size = _pages(size) * PAGE_SIZE
        top -= size
        plan.append((Area(name, top, size, flags, True), content))
        return top

    place("manifest", len(manifest), MANIFEST_FLAGS, manifest)
    libos = LIBOS_PAGE.pack(LIBOS_MAGIC, LAYOUT_VERSION, int(edmm), max_threads, libos_hash)
    libos_offset = place("libos", PAGE_SIZE, LIBOS_FLAGS, libos)
    ssa_size = SSA_FRAMES * SSA_FRAME_PAGES * PAGE_SIZE
    for thread in range(max_threads):
        tcs_offset = top - PAGE_SIZE
        ssa_offset = tcs_offset - ssa_size
        tcs = TCS.pack(0, 0, ssa_offset, 0, SSA_FRAMES, libos_offset, 0, 0, 0,
                       TCS_SEGMENT_LIMIT, TCS_SEGMENT_LIMIT)
        place(f"tcs[{thread}]", PAGE_SIZE, SECINFO_PT_TCS, tcs)
        place(f"ssa[{thread}]", ssa_size, SSA_FLAGS, None)
    return plan


def describe_layout(manifest_bytes: bytes, libos_hash: bytes, enclave_size: int,
                    max_threads: int, edmm: bool) -> list[Area]:
    """The areas `measure_enclave` measures, highest address first (for verbose output)."""
    return [area for area, _ in _plan(manifest_bytes, libos_hash, enclave_size, max_threads,
                                      edmm)]


def measured_pages(manifest_bytes: bytes, libos_hash: bytes, enclave_size: int,
                   max_threads: int, edmm: bool) -> Iterator[tuple[Area, int, bytes]]:
    """(area, page offset, page bytes) of every page `measure_enclave` adds, in its order
    (ascending addresses): what `pylos mrenclave explain` compares record by record."""
    plan = _plan(manifest_bytes, libos_hash, enclave_size, max_threads, edmm)
    for area, content in reversed(plan):
        padded = (content or b"").ljust(area.size, b"\0")
        for start in range(0, area.size, PAGE_SIZE):
            yield area, area.offset + start, padded[start : start + PAGE_SIZE]


def measure_enclave(manifest_bytes: bytes, libos_hash: bytes, enclave_size: int,
                    max_threads: int, edmm: bool) -> bytes:
    """MRENCLAVE of the pylos enclave for a signed manifest (InputError for invalid inputs)."""
    plan = _plan(manifest_bytes, libos_hash, enclave_size, max_threads, edmm)
    measurement = Measurement()
    measurement.ecreate(SSA_FRAME_PAGES, enclave_size)
    for area, content in reversed(plan):
        if content is None:
            measurement.add_zero_pages(area.offset, area.size // PAGE_SIZE, area.flags)
        else:
            measurement.add_pages(area.offset, content, area.flags)
    return measurement.digest()
