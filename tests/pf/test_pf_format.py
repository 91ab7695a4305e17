"""Gramine protected files against Gramine's own output: KDF, layout, decryption, structure."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from pf_support import GT, SIZES, gt_path, open_rw, walk, wrap_key

from pylos.pf import (
    PfError,
    ProtectedFile,
    decrypt_stream,
    encrypt_stream,
    metadata_key,
    normalize_path,
    physical_size,
    plaintext_size,
)
from pylos.pf.format import data_node_physical, mht_node_physical

VERSIONS = ("v1", "v2")


def test_kdf_vector() -> None:
    """enc_v2_small.pf's nonce under key 00..0f gives this metadata key (docs/formats.md)."""
    nonce = bytes.fromhex("dbe0b398ce27d4c4e7220129307dbda9b9ee3e1893cc7e5c43bd9f8c26839ed7")
    assert (GT / "enc_v2_small.pf").read_bytes()[10:42] == nonce
    assert metadata_key(wrap_key(), nonce).hex() == "80b7fd85e8773b03c6224d16775e273e"


def test_node_numbering() -> None:
    # metadata, root MHT, data 0..95, MHT 1, data 96..
    assert [data_node_physical(d) for d in (0, 95, 96, 191, 192)] == [2, 97, 99, 194, 196]
    assert [mht_node_physical(n) for n in (0, 1, 2, 33)] == [1, 98, 195, 3202]
    assert [physical_size(s) for s in (0, 100, 3072, 3073, 10000, 401288)] == [
        4096, 4096, 4096, 12288, 16384, 413696]


@pytest.mark.parametrize("path,expected", [
    ("encrypted/small.bin", "encrypted/small.bin"), ("./a//b/./c/", "a/b/c"),
    ("a/../../b", "../b"), ("/x/../../y", "/y"), ("/", "/"), ("./", "."), ("a/..", "."),
])
def test_normalize_path_like_gramine(path: str, expected: str) -> None:
    assert normalize_path(path) == expected


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", SIZES)
def test_decrypt_ground_truth(version: str, name: str) -> None:
    plain = (GT / f"plain_{name}.bin").read_bytes()
    enc = GT / f"enc_{version}_{name}.pf"
    fd = os.open(enc, os.O_RDONLY)
    try:
        assert plaintext_size(fd, wrap_key(), gt_path(name)) == len(plain)
        with ProtectedFile.open(fd, wrap_key(), gt_path(name), readonly=True) as pf:
            assert pf.size == len(plain)
            assert pf.read(0, len(plain) + 10) == plain
            for offset in (0, 99, 3071, 3072, 7168, 9999, 393216 + 3072, 401000):
                assert pf.read(offset, 700) == plain[offset:offset + 700]
        out = io.BytesIO()
        assert decrypt_stream(fd, out, wrap_key(), gt_path(name), "x") == len(plain)
        assert out.getvalue() == plain
    finally:
        os.close(fd)


@pytest.mark.parametrize("version", VERSIONS)
def test_wrong_path_refused(version: str) -> None:
    fd = os.open(GT / f"enc_{version}_medium.pf", os.O_RDONLY)
    try:
        for wrong in ("encrypted/small.bin", "/encrypted/medium.bin", "encrypted/medium.bin2"):
            with pytest.raises(PfError, match=re.escape("bound to path 'encrypted/medium.bin'")) as info:
                ProtectedFile.open(fd, wrap_key(), wrong, readonly=True)
            assert info.value.check == "path"
            with pytest.raises(PfError) as info:
                decrypt_stream(fd, io.BytesIO(), wrap_key(), wrong, "x")
            assert info.value.check == "path"
            with pytest.raises(PfError):
                plaintext_size(fd, wrap_key(), wrong)
    finally:
        os.close(fd)


def _structure(data: bytes) -> dict:
    info = walk(data, wrap_key())
    return {k: info[k] for k in ("length", "size", "path", "nodes", "slots", "padding")} | {
        "header": info["header"]}


@pytest.mark.parametrize("name", SIZES)
@pytest.mark.parametrize("writer", ["stream", "random-access"])
def test_written_files_have_gramines_layout(tmp_path: Path, name: str, writer: str) -> None:
    """Same length, same nodes at the same physical positions, same used MHT slots, same
    header (file id, version 2.0, flag 0) and padding as Gramine's file of that length."""
    plain = (GT / f"plain_{name}.bin").read_bytes()
    out = tmp_path / "out.pf"
    fd = open_rw(out, create=True)
    try:
        if writer == "stream":
            with open(GT / f"plain_{name}.bin", "rb", buffering=0) as src:
                encrypt_stream(src, len(plain), fd, wrap_key(), gt_path(name))
        else:
            with ProtectedFile.open(fd, wrap_key(), gt_path(name), create=True) as pf:
                for offset in range(0, len(plain), 5000):  # unaligned chunks
                    pf.write(offset, plain[offset:offset + 5000])
    finally:
        os.close(fd)
    ours = out.read_bytes()
    gramine = (GT / f"enc_v2_{name}.pf").read_bytes()
    assert _structure(ours) == _structure(gramine)
    assert walk(ours, wrap_key())["plain"] == plain
    assert ours[10:58] != gramine[10:58]  # fresh nonce (so key) and MAC


def test_fresh_keys_and_nonce_every_flush(tmp_path: Path) -> None:
    path = tmp_path / "f.pf"
    fd = open_rw(path, create=True)
    try:
        pf = ProtectedFile.open(fd, wrap_key(), "f", create=True)
        pf.write(0, os.urandom(20000))
        pf.flush()
        first = path.read_bytes()
        pf.write(3072 + 5, b"x")  # data node 0 only
        pf.flush()
        second = path.read_bytes()
        pf.close()
    finally:
        os.close(fd)
    changed = [k for k in range(len(first) // 4096)
               if first[k * 4096:(k + 1) * 4096] != second[k * 4096:(k + 1) * 4096]]
    assert changed == [0, 1, 2]  # metadata (new nonce), root MHT (new key), data node 0
    assert first[10:42] != second[10:42]


def test_modified_v1_file_is_written_back_as_v2(tmp_path: Path) -> None:
    path = tmp_path / "large.pf"
    path.write_bytes((GT / "enc_v1_large.pf").read_bytes())  # a scratch file to modify
    plain = bytearray((GT / "plain_large.bin").read_bytes())
    fd = open_rw(path)
    try:
        with ProtectedFile.open(fd, wrap_key(), gt_path("large")) as pf:
            pf.write(200000, b"changed")
        plain[200000:200007] = b"changed"
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data[8] == 2 and data[58] == 0
    assert walk(data, wrap_key())["plain"] == plain
    assert _structure(data) == _structure((GT / "enc_v2_large.pf").read_bytes())


def test_non_utf8_bound_path(tmp_path: Path) -> None:
    """Host names are bytes: a bound path that is not UTF-8 round-trips exactly."""
    name = os.fsdecode(b"dir/\xff\xfe-name")
    path = tmp_path / "f.pf"
    fd = open_rw(path, create=True)
    try:
        with ProtectedFile.open(fd, wrap_key(), name, create=True) as pf:
            pf.write(0, b"x" * 5000)
        assert walk(path.read_bytes(), wrap_key())["plain"] == b"x" * 5000
        with ProtectedFile.open(fd, wrap_key(), name, readonly=True) as pf:
            assert pf.size == 5000
        with pytest.raises(PfError) as info:
            ProtectedFile.open(fd, wrap_key(), os.fsdecode(b"dir/\xff\xfd-name"), readonly=True)
        assert info.value.check == "path"
    finally:
        os.close(fd)
