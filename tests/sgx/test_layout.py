from __future__ import annotations

import itertools
import time

import pytest

from pylos.errors import PylosError
from pylos.sgx.layout import Area, describe_layout, measure_enclave, measured_pages
from pylos.sgx.measure import Measurement
from pylos.sgx.structs import PAGE_SIZE

BASE = {"manifest_bytes": b'libos.entrypoint = "/x"\n', "libos_hash": bytes(range(32)),
        "enclave_size": 1 << 28, "max_threads": 4, "edmm": False}


def le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def test_deterministic():
    assert measure_enclave(**BASE) == measure_enclave(**BASE)


@pytest.mark.parametrize(("key", "value"), [
    ("manifest_bytes", b'libos.entrypoint = "/y"\n'),
    ("manifest_bytes", b'libos.entrypoint = "/x"\n\n'),
    ("libos_hash", bytes(range(31)) + b"\0"),
    ("enclave_size", 1 << 29),
    ("max_threads", 5),
    ("edmm", True),
])
def test_every_input_changes_the_measurement(key, value):
    assert measure_enclave(**{**BASE, key: value}) != measure_enclave(**BASE)


def test_hand_built_tiny_enclave_agrees():
    """The whole layout, spelled out with Measurement for one thread in a 64 KiB enclave."""
    manifest, libos_hash, size = b"m", bytes(range(100, 132)), 1 << 16
    manifest_at, libos_at, tcs_at, ssa_at = 0xF000, 0xE000, 0xD000, 0xB000
    tcs = bytearray(PAGE_SIZE)
    tcs[16:24] = le(ssa_at, 8)      # OSSA
    tcs[28:32] = le(2, 4)           # NSSA
    tcs[32:40] = le(libos_at, 8)    # OENTRY
    tcs[64:68] = tcs[68:72] = le(0xFFF, 4)  # OFSLIMIT, OGSLIMIT
    libos = b"PYLOSLIB" + le(1, 4) + le(1, 4) + le(1, 4) + libos_hash
    m = Measurement()
    m.ecreate(1, size)
    m.add_page(ssa_at, bytes(PAGE_SIZE), 0x203)
    m.add_page(ssa_at + PAGE_SIZE, bytes(PAGE_SIZE), 0x203)
    m.add_page(tcs_at, bytes(tcs), 0x100)
    m.add_page(libos_at, libos.ljust(PAGE_SIZE, b"\0"), 0x205)
    m.add_page(manifest_at, b"m\0".ljust(PAGE_SIZE, b"\0"), 0x201)
    assert measure_enclave(manifest, libos_hash, size, 1, True) == m.digest()
    assert describe_layout(manifest, libos_hash, size, 1, True) == [
        Area("manifest", manifest_at, PAGE_SIZE, 0x201, True),
        Area("libos", libos_at, PAGE_SIZE, 0x205, True),
        Area("tcs[0]", tcs_at, PAGE_SIZE, 0x100, True),
        Area("ssa[0]", ssa_at, 2 * PAGE_SIZE, 0x203, True),
    ]


def test_layout_is_contiguous_from_the_top():
    manifest = b"x" * (2 * PAGE_SIZE - 1)  # + NUL = exactly two pages
    areas = describe_layout(manifest, bytes(32), 1 << 20, 3, False)
    assert [a.name for a in areas] == ["manifest", "libos", "tcs[0]", "ssa[0]", "tcs[1]",
                                       "ssa[1]", "tcs[2]", "ssa[2]"]
    assert areas[0].size == 2 * PAGE_SIZE and areas[0].offset + areas[0].size == 1 << 20
    for upper, lower in itertools.pairwise(areas):
        assert lower.offset + lower.size == upper.offset
    assert all(a.measured for a in areas)
    assert areas[2].describe() == "00000000000fc000-00000000000fd000 [TCS:---] (tcs[0]) measured"
    assert areas[3].describe() == "00000000000fa000-00000000000fc000 [REG:RW-] (ssa[0]) measured"


def test_exact_fit_is_accepted():
    # 1 manifest page + libos + 5 threads × 3 pages = 17 pages would not fit 16; 4 threads do.
    measure_enclave(b"", bytes(32), 16 * PAGE_SIZE, 4, False)
    with pytest.raises(PylosError, match="too small"):
        measure_enclave(b"", bytes(32), 16 * PAGE_SIZE, 5, False)


@pytest.mark.parametrize(("change", "message"), [
    ({"enclave_size": 3 << 20}, "Enclave size must be a power of two"),
    ({"enclave_size": 0}, "Enclave size must be a power of two"),
    ({"enclave_size": 1 << 14},
     'sgx.enclave_size = 0x4000 is too small: the manifest, the libos page and 4 thread(s) need '
     '0xe000 bytes; use at least sgx.enclave_size = "64K"'),
    ({"manifest_bytes": b"x" * (3 << 20)}, 'use at least sgx.enclave_size = "4M"'),
    ({"manifest_bytes": b"a = 1\n\0"}, "the manifest contains a NUL byte (at offset 6)"),
    ({"max_threads": 0}, "sgx.max_threads must be at least 1"),
    ({"libos_hash": bytes(20)}, "32-byte SHA-256"),
])
def test_bad_inputs_rejected(change, message):
    inputs = {**BASE, **change}
    if "manifest_bytes" in change:
        inputs["enclave_size"] = 1 << 20
    with pytest.raises(PylosError, match=message.replace("(", r"\(").replace(")", r"\)")):
        measure_enclave(**inputs)


def test_large_manifest_is_fast():
    start = time.perf_counter()
    measure_enclave(b"x" * 1_400_000, bytes(32), 1 << 30, 32, False)
    elapsed = time.perf_counter() - start
    print(f"layout: 1.4 MB manifest, 32 threads, 1 GiB: {elapsed * 1000:.1f} ms")
    assert elapsed < 1.0


def test_measured_pages_are_what_measure_enclave_measures():
    """`pylos mrenclave explain` walks `measured_pages`: hashed, they give MRENCLAVE."""
    inputs = {**BASE, "manifest_bytes": b"x = 1\n" * 1000, "enclave_size": 1 << 20}
    m = Measurement()
    m.ecreate(1, inputs["enclave_size"])
    for area, offset, page in measured_pages(**inputs):
        m.add_page(offset, page, area.flags)
    assert m.digest() == measure_enclave(**inputs)
