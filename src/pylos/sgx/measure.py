"""MRENCLAVE: SHA-256 over the 64-byte ECREATE / EADD / EEXTEND records (docs/formats.md).

`Measurement` produces the same record bytes the CPU hashes, so an enclave layout measured here
gives the MRENCLAVE real hardware would report for it. An SGXS file (Fortanix `doc/SGXS.md`) is
exactly such a record stream: `parse_sgxs` plus `remeasure_sgxs` rebuild its measurement page by
page with our own record code — the check that our records are the hardware's.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from pylos.sgx.structs import PAGE_SIZE

RECORD_SIZE = 64
CHUNK = 256
CHUNKS_PER_PAGE = PAGE_SIZE // CHUNK
ECREATE = struct.Struct("<8sIQ44x")
EADD = struct.Struct("<8sQQ40x")
EEXTEND = struct.Struct("<8sQ48x")
TAG_ECREATE, TAG_EADD, TAG_EEXTEND = b"ECREATE\0", b"EADD\0\0\0\0", b"EEXTEND\0"

# Everything one measured zero page contributes (EADD, then 16 × EEXTEND + 256 zero bytes) in
# one struct call: only the offsets change from page to page.
_ZERO_PAGE = struct.Struct("<8sQQ40x" + "8sQ48x256x" * CHUNKS_PER_PAGE)
_CHUNK_OFFSETS = range(0, PAGE_SIZE, CHUNK)


class Measurement:
    """Accumulates MRENCLAVE as an enclave is built, one record at a time."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def ecreate(self, ssa_frame_size_pages: int, size: int) -> None:
        self._hash.update(ECREATE.pack(TAG_ECREATE, ssa_frame_size_pages, size))

    def eadd(self, offset: int, secinfo_flags: int) -> None:
        self._hash.update(EADD.pack(TAG_EADD, offset, secinfo_flags))

    def eextend(self, offset: int, chunk: bytes) -> None:
        if len(chunk) != CHUNK:
            raise ValueError(f"EEXTEND measures {CHUNK} bytes, got {len(chunk)}")
        self._hash.update(EEXTEND.pack(TAG_EEXTEND, offset))
        self._hash.update(chunk)

    def add_page(self, offset: int, data: bytes, secinfo_flags: int, measured: bool = True
                 ) -> None:
        """EADD one page, then EEXTEND its 16 chunks unless the page is added unmeasured."""
        if len(data) != PAGE_SIZE:
            raise ValueError(f"a page is {PAGE_SIZE} bytes, got {len(data)}")
        self.eadd(offset, secinfo_flags)
        if measured:
            view = memoryview(data)
            for start in _CHUNK_OFFSETS:
                self.eextend(offset + start, view[start : start + CHUNK])

    def add_pages(self, offset: int, data: bytes, secinfo_flags: int, measured: bool = True
                  ) -> None:
        """Add `data`, zero-padded to whole pages, as consecutive pages from `offset`."""
        padded = data + bytes(-len(data) % PAGE_SIZE)
        for start in range(0, len(padded), PAGE_SIZE):
            self.add_page(offset + start, padded[start : start + PAGE_SIZE], secinfo_flags,
                          measured)

    def add_zero_pages(self, offset: int, count: int, secinfo_flags: int, measured: bool = True
                       ) -> None:
        """Add `count` zero pages: one struct call and one hash update per page."""
        update = self._hash.update
        end = offset + count * PAGE_SIZE
        if not measured:
            for base in range(offset, end, PAGE_SIZE):
                update(EADD.pack(TAG_EADD, base, secinfo_flags))
            return
        args: list[bytes | int] = [TAG_EADD, 0, secinfo_flags, *[TAG_EEXTEND, 0] * CHUNKS_PER_PAGE]
        for base in range(offset, end, PAGE_SIZE):
            args[1] = base
            args[4::2] = [base + start for start in _CHUNK_OFFSETS]
            update(_ZERO_PAGE.pack(*args))

    def digest(self) -> bytes:
        """MRENCLAVE so far (the accumulator stays usable)."""
        return self._hash.copy().digest()


@dataclass(frozen=True)
class SgxsEcreate:
    ssa_frame_size: int
    size: int


@dataclass(frozen=True)
class SgxsEadd:
    offset: int
    secinfo_flags: int


@dataclass(frozen=True)
class SgxsEextend:
    offset: int
    data: bytes


SgxsRecord = SgxsEcreate | SgxsEadd | SgxsEextend


def parse_sgxs(data: bytes) -> list[SgxsRecord]:
    """Parse an SGXS record stream; ValueError names the byte offset of anything malformed."""
    records: list[SgxsRecord] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < RECORD_SIZE:
            raise ValueError(f"SGXS: truncated record at offset {pos} "
                             f"({len(data) - pos} of {RECORD_SIZE} bytes)")
        tag = data[pos : pos + 8]
        if tag not in (TAG_ECREATE, TAG_EADD, TAG_EEXTEND):
            raise ValueError(f"SGXS: unknown record tag {tag!r} at offset {pos}")
        if (tag == TAG_ECREATE) != (pos == 0):
            raise ValueError(f"SGXS: the stream must start with exactly one ECREATE "
                             f"(record at offset {pos} is {tag!r})")
        if tag == TAG_ECREATE:
            _, ssa_frame_size, size = ECREATE.unpack_from(data, pos)
            records.append(SgxsEcreate(ssa_frame_size, size))
        elif tag == TAG_EADD:
            _, offset, flags = EADD.unpack_from(data, pos)
            if offset % PAGE_SIZE:
                raise ValueError(f"SGXS: EADD at offset {pos} adds unaligned page {offset:#x}")
            records.append(SgxsEadd(offset, flags))
        else:
            _, offset = EEXTEND.unpack_from(data, pos)
            chunk = data[pos + RECORD_SIZE : pos + RECORD_SIZE + CHUNK]
            if len(chunk) < CHUNK:
                raise ValueError(f"SGXS: truncated EEXTEND data at offset {pos + RECORD_SIZE} "
                                 f"({len(chunk)} of {CHUNK} bytes)")
            if offset % CHUNK:
                raise ValueError(f"SGXS: EEXTEND at offset {pos} measures unaligned chunk "
                                 f"{offset:#x}")
            records.append(SgxsEextend(offset, chunk))
            pos += CHUNK
        pos += RECORD_SIZE
    if not records:
        raise ValueError("SGXS: empty stream (no ECREATE)")
    return records


def remeasure_sgxs(data: bytes) -> bytes:
    """MRENCLAVE of an SGXS stream, rebuilt with `Measurement` from the pages it describes.

    Each EADD with its following EEXTENDs is one page: fully extended pages are reassembled and
    re-added with `add_page`, others re-added record by record, so the record bytes hashed are
    ours, not the file's.
    """
    records = parse_sgxs(data)
    ecreate = records[0]
    assert isinstance(ecreate, SgxsEcreate)  # parse_sgxs guarantees it
    measurement = Measurement()
    measurement.ecreate(ecreate.ssa_frame_size, ecreate.size)
    pages: list[tuple[SgxsEadd, list[SgxsEextend]]] = []
    for index, record in enumerate(records[1:], start=1):
        if isinstance(record, SgxsEadd):
            pages.append((record, []))
        elif isinstance(record, SgxsEextend):
            if not pages or not 0 <= record.offset - pages[-1][0].offset < PAGE_SIZE:
                raise ValueError(f"SGXS: EEXTEND (record {index}) of {record.offset:#x} does "
                                 "not follow the EADD of its page")
            pages[-1][1].append(record)
    for eadd, chunks in pages:
        if [c.offset - eadd.offset for c in chunks] == list(_CHUNK_OFFSETS):
            page = b"".join(c.data for c in chunks)
            measurement.add_page(eadd.offset, page, eadd.secinfo_flags)
        else:
            measurement.eadd(eadd.offset, eadd.secinfo_flags)
            for chunk in chunks:
                measurement.eextend(chunk.offset, chunk.data)
    return measurement.digest()
