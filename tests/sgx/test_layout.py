from __future__ import annotations

import time

import pytest

from pylos.errors import PylosError
from pylos.sgx.layout import enclave_areas, measure_enclave
from pylos.sgx.measure import Measurement
from pylos.sgx.structs import PAGE_SIZE

BASE = {"manifest_bytes": b'libos.entrypoint = "/x"\n', "libos_hash": bytes(range(32)),
        "enclave_size": 1 << 28, "max_threads": 4, "edmm": False}


def test_deterministic():
    assert measure_enclave(**BASE) == measure_enclave(**BASE)


@pytest.mark.parametrize(("key", "value"), [
    ("manifest_bytes", b'libos.entrypoint = "/y"\n'),
    ("libos_hash", bytes(31) + b"\1"),
    ("enclave_size", 1 << 29),
    ("max_threads", 5),
    ("edmm", True),
])
def test_every_input_changes_the_measurement(key, value):
    assert measure_enclave(**{**BASE, key: value}) != measure_enclave(**BASE)


def test_hand_built_tiny_enclave_agrees():
    manifest, libos_hash, size = b"m", bytes(32), 1 << 16
    m = Measurement()
    m.ecreate(1, size)
    areas = sorted(enclave_areas(manifest, libos_hash, size, 1, False), key=lambda a: a.offset)
    assert [a.name for a in areas] == ["tcs[0]", "ssa[0]", "libos", "manifest"]
    tcs, ssa, libos, manifest_area = areas
    assert manifest_area.offset == size - PAGE_SIZE and libos.offset == size - 2 * PAGE_SIZE
    tcs_page = bytearray(PAGE_SIZE)
    tcs_page[16:24] = ssa.offset.to_bytes(8, "little")     # OSSA
    tcs_page[28:32] = (2).to_bytes(4, "little")            # NSSA
    tcs_page[32:40] = libos.offset.to_bytes(8, "little")   # OENTRY
    tcs_page[64:68] = tcs_page[68:72] = (0xFFF).to_bytes(4, "little")
    m.add_page(tcs.offset, bytes(tcs_page), 0x100)
    m.add_page(ssa.offset, bytes(PAGE_SIZE), 0x203)
    m.add_page(ssa.offset + PAGE_SIZE, bytes(PAGE_SIZE), 0x203)
    libos_page = b"PYLOSLIB" + (1).to_bytes(4, "little") + bytes(4) + (1).to_bytes(4, "little")
    m.add_page(libos.offset, (libos_page + libos_hash).ljust(PAGE_SIZE, b"\0"), 0x205)
    m.add_page(manifest_area.offset, b"m\0".ljust(PAGE_SIZE, b"\0"), 0x201)
    assert measure_enclave(manifest, libos_hash, size, 1, False) == m.digest()


def test_bad_sizes_rejected():
    with pytest.raises(PylosError, match="power of two"):
        measure_enclave(**{**BASE, "enclave_size": 3 << 20})
    with pytest.raises(PylosError, match="too small"):
        measure_enclave(**{**BASE, "enclave_size": 1 << 14})
    with pytest.raises(PylosError, match="at least 1"):
        measure_enclave(**{**BASE, "max_threads": 0})


def test_large_manifest_is_fast():
    start = time.perf_counter()
    measure_enclave(b"x" * 1_400_000, bytes(32), 1 << 30, 32, False)
    elapsed = time.perf_counter() - start
    print(f"1.4 MB manifest, 32 threads: {elapsed * 1000:.1f} ms")
    assert elapsed < 1.0
