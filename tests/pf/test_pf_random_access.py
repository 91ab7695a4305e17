"""Random access: only the nodes on a byte's path are read or written; the node cache stays
bounded; random operations match a plain bytearray model across flushes and reopens."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest
from pf_support import open_rw, walk, wrap_key

from pylos.errors import PylosError
from pylos.pf import PfError, ProtectedFile, encrypt_stream, physical_size, plaintext_size
from pylos.pf.format import data_node_physical, mht_node_physical

NODE = 4096
# 3300 data nodes need MHT nodes 0..34: MHT 33 and 34 hang below MHT 1 (three levels)
BIG = 3072 + 3300 * NODE - 123


@pytest.fixture
def big_file(tmp_path: Path) -> tuple[Path, bytes]:
    plain = random.Random(1).randbytes(BIG)
    path = tmp_path / "big.pf"
    src = tmp_path / "big.plain"
    src.write_bytes(plain)
    fd = open_rw(path, create=True)
    with open(src, "rb", buffering=0) as f:
        encrypt_stream(f, BIG, fd, wrap_key(), "big")
    os.close(fd)
    return path, plain


def _nodes(data: bytes) -> list[bytes]:
    return [data[k:k + NODE] for k in range(0, len(data), NODE)]


def test_read_touches_only_the_path(big_file: tuple[Path, bytes]) -> None:
    path, plain = big_file
    fd = open_rw(path)
    try:
        pf = ProtectedFile.open(fd, wrap_key(), "big")
        assert pf.node_reads == 2  # metadata and root MHT
        d = 33 * 96 + 5  # data node under MHT 33, whose parent is MHT 1
        offset = 3072 + d * NODE + 17
        pf.node_reads = 0
        assert pf.read(offset, 1) == plain[offset:offset + 1]
        assert pf.node_reads == 3  # MHT 1, MHT 33, the data node
        assert pf.read(offset + 100, 50) == plain[offset + 100:offset + 150]
        assert pf.node_reads == 3  # cached
        assert pf.read(100, 10) == plain[100:110]  # inside the metadata node
        assert pf.node_reads == 3
        assert pf.read(3072 + 5 * NODE, 1) == plain[3072 + 5 * NODE:3072 + 5 * NODE + 1]
        assert pf.node_reads == 4  # MHT 0 is the root, always in memory

        before = _nodes(path.read_bytes())
        pf.write(offset, b"\xff")
        pf.flush()
        after = _nodes(path.read_bytes())
        changed = [k for k in range(len(before)) if before[k] != after[k]]
        assert changed == sorted([0, 1, mht_node_physical(1), mht_node_physical(33),
                                  data_node_physical(d)])
        assert pf.node_writes == 5
        assert pf.node_reads == 4  # writing did not read anything more
        pf.close()
    finally:
        os.close(fd)
    expected = bytearray(plain)
    expected[offset] = 0xFF
    assert walk(path.read_bytes(), wrap_key())["plain"] == expected


def test_cache_is_bounded(big_file: tuple[Path, bytes]) -> None:
    path, plain = big_file
    fd = open_rw(path)
    try:
        with ProtectedFile.open(fd, wrap_key(), "big", cache_nodes=16) as pf:
            for offset in range(0, BIG, 50000):
                assert pf.read(offset, 70000) == plain[offset:offset + 70000]
                assert pf.cached_nodes <= 16
            rng = random.Random(2)
            model = bytearray(plain)
            for _ in range(300):  # dirty nodes beyond the bound force crash-safe flushes
                offset = rng.randrange(BIG)
                data = rng.randbytes(rng.randrange(1, 9000))
                pf.write(offset, data)
                model[offset:offset + len(data)] = data
                assert pf.cached_nodes <= 16
        assert not Path(str(path) + ".pylos-journal").exists()
    finally:
        os.close(fd)
    assert walk(path.read_bytes(), wrap_key())["plain"] == model


def test_random_operations_match_a_model(tmp_path: Path) -> None:
    rng = random.Random(3)
    path = tmp_path / "m.pf"
    fd = open_rw(path, create=True)
    model = bytearray()
    pf = ProtectedFile.open(fd, wrap_key(), "m", create=True, cache_nodes=8)
    try:
        for step in range(400):
            op = rng.random()
            if op < 0.5:
                offset = rng.randrange(len(model) + 20000)
                data = rng.randbytes(rng.choice([1, 100, 4096, 5000, 30000]))
                assert pf.write(offset, data) == len(data)
                if offset > len(model):
                    model.extend(bytes(offset - len(model)))
                model[offset:offset + len(data)] = data
            elif op < 0.6:
                size = rng.choice([0, 100, 3072, 3073, rng.randrange(len(model) + 50000)])
                pf.truncate(size)
                del model[size:]
                model.extend(bytes(size - len(model)))
            elif op < 0.8:
                offset = rng.randrange(len(model) + 10)
                length = rng.randrange(50000)
                assert pf.read(offset, length) == bytes(model[offset:offset + length]), step
            elif op < 0.9:
                pf.flush()
                assert os.fstat(fd).st_size == physical_size(len(model))
                assert plaintext_size(fd, wrap_key(), "m") == len(model)
            else:
                pf.close()
                pf = ProtectedFile.open(fd, wrap_key(), "m", cache_nodes=rng.choice([8, 1024]))
            assert pf.size == len(model)
        pf.close()
        assert walk(path.read_bytes(), wrap_key())["plain"] == model
    finally:
        os.close(fd)


def test_write_past_end_fills_zeros_and_truncate_then_extend(tmp_path: Path) -> None:
    path = tmp_path / "z.pf"
    fd = open_rw(path, create=True)
    try:
        with ProtectedFile.open(fd, wrap_key(), "z", create=True) as pf:
            pf.write(0, b"\x01" * 20000)
            pf.flush()
            pf.truncate(5000)
            pf.flush()
            assert os.fstat(fd).st_size == physical_size(5000)
            pf.write(9000, b"end")  # the gap must read as zeros, not the old bytes
            assert pf.read(0, 10000) == b"\x01" * 5000 + bytes(4000) + b"end"
            pf.truncate(12000)
            assert pf.read(9000, 5000) == b"end" + bytes(2997)
        with ProtectedFile.open(fd, wrap_key(), "z", readonly=True) as pf:
            assert pf.read(0, 20000) == b"\x01" * 5000 + bytes(4000) + b"end" + bytes(2997)
    finally:
        os.close(fd)


def test_rename_rebinds_the_path(tmp_path: Path) -> None:
    path = tmp_path / "r.pf"
    fd = open_rw(path, create=True)
    try:
        with ProtectedFile.open(fd, wrap_key(), "old/name", create=True) as pf:
            pf.write(0, b"data" * 2000)
            pf.rename("new/name")
            assert pf.path == "new/name"
        with pytest.raises(PfError) as info:
            ProtectedFile.open(fd, wrap_key(), "old/name")
        assert info.value.check == "path"
        with ProtectedFile.open(fd, wrap_key(), "new/name") as pf:
            assert pf.read(0, 8) == b"datadata"
        with pytest.raises(PfError) as info:
            ProtectedFile.open(fd, wrap_key(), "new/name").rename("x" * 800)
        assert info.value.check == "path too long"
    finally:
        os.close(fd)


def test_readonly_and_closed_files_refuse_changes(tmp_path: Path) -> None:
    path = tmp_path / "ro.pf"
    fd = open_rw(path, create=True)
    try:
        ProtectedFile.open(fd, wrap_key(), "ro", create=True).close()
        pf = ProtectedFile.open(fd, wrap_key(), "ro", readonly=True)
        for call in (lambda: pf.write(0, b"x"), lambda: pf.truncate(1),
                     lambda: pf.rename("other")):
            with pytest.raises(PfError, match="read-only"):
                call()
        pf.close()
        with pytest.raises(PylosError, match="closed"):
            pf.read(0, 1)
    finally:
        os.close(fd)


def test_threads_share_one_file(tmp_path: Path) -> None:
    """A FUSE server calls in from several threads: one object, one lock, consistent content."""
    path = tmp_path / "t.pf"
    fd = open_rw(path, create=True)
    pf = ProtectedFile.open(fd, wrap_key(), "t", create=True, cache_nodes=8)
    pf.truncate(4 * 100000)
    errors: list[BaseException] = []
    regions = [bytearray(100000) for _ in range(4)]

    def worker(index: int) -> None:
        rng = random.Random(index)
        base = index * 100000
        mine = regions[index]
        try:
            for _ in range(150):
                offset = rng.randrange(100000 - 5000)
                data = rng.randbytes(rng.randrange(1, 5000))
                pf.write(base + offset, data)
                mine[offset:offset + len(data)] = data
                assert pf.read(base, 100000) == mine
                if rng.random() < 0.1:
                    pf.flush()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        pf.close()
        with ProtectedFile.open(fd, wrap_key(), "t", readonly=True) as check:
            assert check.read(0, 400000) == b"".join(regions)
    finally:
        os.close(fd)


def test_read_buffers_are_the_read_across_cached_and_streamed_nodes(
        big_file: tuple[Path, bytes]) -> None:
    """A FUSE server writes `read_buffers` out as they are: a read that mixes the metadata
    node's bytes, cached nodes, a streamed run and an MHT boundary gives the same bytes."""
    path, plain = big_file
    fd = open_rw(path)
    try:
        pf = ProtectedFile.open(fd, wrap_key(), "big")
        assert pf.read(3072 + 40 * NODE + 5, 3) == plain[3072 + 40 * NODE + 5:][:3]  # cached
        for offset, length in ((1000, 300 * NODE), (3072 + 90 * NODE - 7, 20 * NODE),
                               (BIG - 50 * NODE, 60 * NODE), (BIG, 10)):
            buffers = pf.read_buffers(offset, length)
            assert b"".join(buffers) == plain[offset:offset + length]
            assert b"".join(buffers) == pf.read(offset, length)
        assert pf.read_buffers(BIG + 1, 5) == []
    finally:
        os.close(fd)
