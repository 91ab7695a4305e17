from __future__ import annotations

import hashlib
import struct

import pytest

from pylos.sgx.measure import (
    Measurement,
    SgxsEadd,
    SgxsEcreate,
    SgxsEextend,
    parse_sgxs,
    remeasure_sgxs,
)
from pylos.sgx.structs import PAGE_SIZE, SECINFO_PT_REG, SECINFO_R, SECINFO_W

from support import TESTDATA

SIGSTRUCT_DATA = TESTDATA / "sigstruct"

CASES = [
    ("test_enclave.sgxs", "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc",
     0x40000, 9, 144),
    ("report.sgxs", "a06a560b26f5e397b2d7872fac66fe4b43bf4f507296ee048f110be6fb1a2290",
     0x4000, 3, 48),
]


def read(name: str) -> bytes:
    return (SIGSTRUCT_DATA / name).read_bytes()


def ecreate(size: int) -> bytes:
    return b"ECREATE\0" + struct.pack("<IQ", 1, size) + bytes(44)


def eadd(offset: int, flags: int) -> bytes:
    return b"EADD\0\0\0\0" + struct.pack("<QQ", offset, flags) + bytes(40)


def eextend(offset: int, data: bytes) -> bytes:
    return b"EEXTEND\0" + struct.pack("<Q", offset) + bytes(48) + data


@pytest.mark.parametrize(("name", "mrenclave", "size", "eadds", "eextends"), CASES)
def test_remeasure_real_sgxs_page_by_page(name, mrenclave, size, eadds, eextends):
    data = read(name)
    records = parse_sgxs(data)
    assert records[0] == SgxsEcreate(ssa_frame_size=1, size=size)
    assert sum(isinstance(r, SgxsEadd) for r in records) == eadds
    assert sum(isinstance(r, SgxsEextend) for r in records) == eextends
    assert remeasure_sgxs(data).hex() == mrenclave
    # The file itself is the record stream: our rebuild must equal its plain hash too.
    assert hashlib.sha256(data).hexdigest() == mrenclave


def test_changed_page_content_changes_measurement():
    data = bytearray(read("test_enclave.sgxs"))
    data[data.index(b"EEXTEND\0") + 64] ^= 1
    assert remeasure_sgxs(bytes(data)).hex() != CASES[0][1]


@pytest.mark.parametrize(("cut", "message"), [
    (10, "truncated record at offset 0"),
    (64 + 30, "truncated record at offset 64"),
    (64 + 64 + 100, "truncated EEXTEND data at offset 192"),
])
def test_truncated_sgxs_rejected(cut, message):
    data = read("test_enclave.sgxs")
    with pytest.raises(ValueError, match=message):
        parse_sgxs(data[:cut])


def test_truncated_real_file_rejected():
    data = read("test_enclave.sgxs")
    with pytest.raises(ValueError, match="truncated EEXTEND data"):
        remeasure_sgxs(data[:-100])


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty stream"),
    (b"EBOGUS\0\0" + bytes(56), r"unknown record tag b'EBOGUS\\x00\\x00' at offset 0"),
    (eadd(0, 0x201), "must start with exactly one ECREATE"),
    (ecreate(0x4000) + ecreate(0x4000), "must start with exactly one ECREATE"),
    (ecreate(0x4000) + eadd(0x10, 0x201), "unaligned page 0x10"),
    (ecreate(0x4000) + eadd(0, 0x201) + eextend(0x80, bytes(256)), "unaligned chunk 0x80"),
])
def test_malformed_sgxs_rejected(data, message):
    with pytest.raises(ValueError, match=message):
        parse_sgxs(data)


def test_eextend_outside_its_page_rejected():
    data = ecreate(0x4000) + eadd(0, 0x201) + eextend(0x1000, bytes(256))
    with pytest.raises(ValueError, match="does not follow the EADD of its page"):
        remeasure_sgxs(data)


def test_partially_extended_and_unmeasured_pages():
    """SGX allows measuring only some chunks of a page; the rebuild handles that record-wise."""
    data = (ecreate(0x4000)
            + eadd(0x1000, 0x203) + eextend(0x1100, b"\xaa" * 256) + eextend(0x1000, bytes(256))
            + eadd(0x2000, 0x203)
            + eadd(0x3000, 0x201) + b"".join(eextend(0x3000 + i * 256, bytes([i]) * 256)
                                             for i in range(16)))
    assert remeasure_sgxs(data) == hashlib.sha256(data).digest()


def test_record_formats_by_hand():
    m = Measurement()
    m.ecreate(1, 0x2000)
    m.add_page(0x1000, bytes(range(256)) * 16, SECINFO_PT_REG | SECINFO_R)
    m.add_page(0, bytes(PAGE_SIZE), SECINFO_PT_REG | SECINFO_R | SECINFO_W, measured=False)
    expected = hashlib.sha256()
    expected.update(b"ECREATE\0" + (1).to_bytes(4, "little") + (0x2000).to_bytes(8, "little")
                    + bytes(44))
    expected.update(b"EADD\0\0\0\0" + (0x1000).to_bytes(8, "little") + (0x201).to_bytes(8, "little")
                    + bytes(40))
    for i in range(16):
        expected.update(b"EEXTEND\0" + (0x1000 + 256 * i).to_bytes(8, "little") + bytes(48))
        expected.update(bytes(range(256)))
    expected.update(b"EADD\0\0\0\0" + bytes(8) + (0x203).to_bytes(8, "little") + bytes(40))
    assert m.digest() == expected.digest()


def test_bad_page_and_chunk_sizes_rejected():
    m = Measurement()
    with pytest.raises(ValueError, match="4096 bytes, got 4095"):
        m.add_page(0, bytes(4095), 0x201)
    with pytest.raises(ValueError, match="256 bytes, got 255"):
        m.eextend(0, bytes(255))


@pytest.mark.parametrize("measured", [True, False])
def test_zero_pages_fast_path_equals_page_by_page(measured):
    slow, fast = Measurement(), Measurement()
    for m in (slow, fast):
        m.ecreate(1, 1 << 20)
    for i in range(3):
        slow.add_page(0x4000 + i * PAGE_SIZE, bytes(PAGE_SIZE), 0x203, measured)
    fast.add_zero_pages(0x4000, 3, 0x203, measured)
    assert slow.digest() == fast.digest()


def test_add_pages_pads_the_last_page():
    whole, padded = Measurement(), Measurement()
    whole.add_page(0, b"abc".ljust(PAGE_SIZE, b"\0"), 0x201)
    whole.add_page(PAGE_SIZE, bytes(PAGE_SIZE), 0x201)
    padded.add_pages(0, b"abc".ljust(PAGE_SIZE + 1, b"\0"), 0x201)
    assert whole.digest() == padded.digest()
