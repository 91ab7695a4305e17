from __future__ import annotations

import hashlib

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

CASES = [
    ("test_enclave.sgxs", "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc",
     0x40000, 1, 9, 144),
    ("report.sgxs", "a06a560b26f5e397b2d7872fac66fe4b43bf4f507296ee048f110be6fb1a2290",
     0x4000, None, 3, 48),
]


@pytest.mark.parametrize(("name", "mrenclave", "size", "ssa", "eadds", "eextends"), CASES)
def test_remeasure_real_sgxs_page_by_page(testdata, name, mrenclave, size, ssa, eadds, eextends):
    data = (testdata / "sigstruct" / name).read_bytes()
    records = parse_sgxs(data)
    assert isinstance(records[0], SgxsEcreate) and records[0].size == size
    if ssa is not None:
        assert records[0].ssa_frame_size == ssa
    assert sum(isinstance(r, SgxsEadd) for r in records) == eadds
    assert sum(isinstance(r, SgxsEextend) for r in records) == eextends
    assert remeasure_sgxs(data).hex() == mrenclave
    # The file itself is the record stream: our rebuild must equal its plain hash too.
    assert hashlib.sha256(data).hexdigest() == mrenclave


def test_changed_page_content_changes_measurement(testdata):
    data = bytearray((testdata / "sigstruct" / "test_enclave.sgxs").read_bytes())
    eextend_data_at = data.index(b"EEXTEND\0") + 64
    data[eextend_data_at] ^= 1
    assert remeasure_sgxs(bytes(data)).hex() != CASES[0][1]


@pytest.mark.parametrize("cut", [10, 64 + 64 + 100])
def test_truncated_sgxs_rejected(testdata, cut):
    data = (testdata / "sigstruct" / "test_enclave.sgxs").read_bytes()
    with pytest.raises(ValueError, match="truncated"):
        parse_sgxs(data[: len(data) - cut] if cut > 64 else data[:cut])


def test_unknown_tag_rejected():
    with pytest.raises(ValueError, match="unknown record tag"):
        parse_sgxs(b"EBOGUS\0\0" + bytes(56))


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


def test_zero_pages_fast_path_equals_page_by_page():
    slow, fast = Measurement(), Measurement()
    for m in (slow, fast):
        m.ecreate(1, 1 << 20)
    for i in range(3):
        slow.add_page(0x4000 + i * PAGE_SIZE, bytes(PAGE_SIZE), 0x203)
    fast.add_zero_pages(0x4000, 3, 0x203)
    assert slow.digest() == fast.digest()
