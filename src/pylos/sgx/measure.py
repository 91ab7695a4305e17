"""MRENCLAVE: SHA-256 over the 64-byte ECREATE / EADD / EEXTEND records (`sgx-formats.md` §7).

An SGXS file (Fortanix `doc/SGXS.md`) is exactly this record stream, so `parse_sgxs` plus
`remeasure_sgxs` rebuild a measurement from its pages with our own record code — the check that
our records are the hardware's.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from pylos.sgx.structs import PAGE_SIZE

ECREATE = struct.Struct("<8sIQ44s")
EADD = struct.Struct("<8sQQ40s")
EEXTEND = struct.Struct("<8sQ48s")
CHUNK = 256
CHUNKS_PER_PAGE = PAGE_SIZE // CHUNK
TAG_ECREATE, TAG_EADD, TAG_EEXTEND = b"ECREATE\0", b"EADD\0\0\0\0", b"EEXTEND\0"
_ZERO_CHUNK = bytes(CHUNK)


class Measurement:
    """Accumulates MRENCLAVE as an enclave is built, one record at a time."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def ecreate(self, ssa_frame_size_pages: int, size: int) -> None:
        self._hash.update(ECREATE.pack(TAG_ECREATE, ssa_frame_size_pages, size, b""))

    def eadd(self, offset: int, secinfo_flags: int) -> None:
        self._hash.update(EADD.pack(TAG_EADD, offset, secinfo_flags, b""))

    def eextend(self, offset: int, chunk: bytes) -> None:
        if len(chunk) != CHUNK:
            raise ValueError(f"EEXTEND measures {CHUNK} bytes, got {len(chunk)}")
        self._hash.update(EEXTEND.pack(TAG_EEXTEND, offset, b""))
        self._hash.update(chunk)

    def add_page(self, offset: int, data: bytes, secinfo_flags: int, measured: bool = True
                 ) -> None:
        """EADD one page, then EEXTEND its 16 chunks unless the page is added unmeasured."""
        if len(data) != PAGE_SIZE:
            raise ValueError(f"a page is {PAGE_SIZE} bytes, got {len(data)}")
        self.eadd(offset, secinfo_flags)
        if measured:
            for i in range(CHUNKS_PER_PAGE):
                start = i * CHUNK
                self.eextend(offset + start, data[start : start + CHUNK])

    def add_pages(self, offset: int, data: bytes, secinfo_flags: int, measured: bool = True
                  ) -> None:
        """Add `data` (zero-padded to whole pages) as consecutive pages from `offset`."""
        padded = data + bytes(-len(data) % PAGE_SIZE)
        for start in range(0, len(padded), PAGE_SIZE):
            self.add_page(offset + start, padded[start : start + PAGE_SIZE], secinfo_flags,
                          measured)

    def add_zero_pages(self, offset: int, count: int, secinfo_flags: int, measured: bool = True
                       ) -> None:
        """Add `count` zero pages; the record stream is built in one buffer per page."""
        for page in range(count):
            base = offset + page * PAGE_SIZE
            parts = [EADD.pack(TAG_EADD, base, secinfo_flags, b"")]
            if measured:
                for i in range(CHUNKS_PER_PAGE):
                    parts.append(EEXTEND.pack(TAG_EEXTEND, base + i * CHUNK, b""))
                    parts.append(_ZERO_CHUNK)
            self._hash.update(b"".join(parts))

    def digest(self) -> bytes:
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
    """Parse an SGXS record stream; ValueError names the offset of anything malformed."""
    records: list[SgxsRecord] = []
    pos = 0
    while pos < len(data):
        record = data[pos : pos + 64]
        if len(record) < 64:
            raise ValueError(f"SGXS: truncated record at offset {pos}")
        tag = record[:8]
        if tag == TAG_ECREATE:
            _, ssa, size, _ = ECREATE.unpack(record)
            records.append(SgxsEcreate(ssa, size))
        elif tag == TAG_EADD:
            _, offset, flags, _ = EADD.unpack(record)
            records.append(SgxsEadd(offset, flags))
        elif tag == TAG_EEXTEND:
            _, offset, _ = EEXTEND.unpack(record)
            chunk = data[pos + 64 : pos + 64 + CHUNK]
            if len(chunk) < CHUNK:
                raise ValueError(f"SGXS: truncated EEXTEND data at offset {pos + 64}")
            records.append(SgxsEextend(offset, chunk))
            pos += CHUNK
        else:
            raise ValueError(f"SGXS: unknown record tag {tag!r} at offset {pos}")
        pos += 64
    if not records or not isinstance(records[0], SgxsEcreate):
        raise ValueError("SGXS: the stream must start with ECREATE")
    return records


def remeasure_sgxs(data: bytes) -> bytes:
    """MRENCLAVE of an SGXS stream, rebuilt page by page with `Measurement`.

    Pages are reassembled from their EEXTEND chunks and re-added with `add_page`, so the record
    bytes hashed are ours, not the file's.
    """
    records = parse_sgxs(data)
    measurement = Measurement()
    header = records[0]
    assert isinstance(header, SgxsEcreate)
    measurement.ecreate(header.ssa_frame_size, header.size)
    index = 1
    while index < len(records):
        eadd = records[index]
        if not isinstance(eadd, SgxsEadd):
            raise ValueError(f"SGXS: record {index} is not an EADD where a page must start")
        chunks = records[index + 1 : index + 1 + CHUNKS_PER_PAGE]
        measured = (len(chunks) == CHUNKS_PER_PAGE
                    and all(isinstance(c, SgxsEextend) for c in chunks))
        if measured:
            expected = [eadd.offset + i * CHUNK for i in range(CHUNKS_PER_PAGE)]
            if [c.offset for c in chunks] != expected:  # type: ignore[union-attr]
                raise ValueError(f"SGXS: page at {eadd.offset:#x} is not extended in order")
            page = b"".join(c.data for c in chunks)  # type: ignore[union-attr]
            measurement.add_page(eadd.offset, page, eadd.secinfo_flags)
            index += 1 + CHUNKS_PER_PAGE
        else:
            measurement.add_page(eadd.offset, bytes(PAGE_SIZE), eadd.secinfo_flags,
                                 measured=False)
            index += 1
    return measurement.digest()
