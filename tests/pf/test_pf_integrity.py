"""Every attack the format must catch: flipped bytes in any node, truncation, extension,
swapped files (path binding), wrong key, forged header fields, a missing recovery file."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
from pf_support import GT, gt_path, open_rw, wrap_key

from pylos.pf import PfError, ProtectedFile, decrypt_stream, plaintext_size

NODE = 4096


def _attempt(path: Path, bound: str, key: bytes | None = None) -> list[PfError]:
    """Open and fully read `path` both ways; return the errors (one per way, or none)."""
    key = key or wrap_key()
    errors = []
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            with ProtectedFile.open(fd, key, bound, readonly=True) as pf:
                pf.read(0, pf.size)
        except PfError as exc:
            errors.append(exc)
        try:
            decrypt_stream(fd, io.BytesIO(), key, bound, f"'{path}'")
        except PfError as exc:
            errors.append(exc)
    finally:
        os.close(fd)
    return errors


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_flipped_byte_in_every_node_is_detected(tmp_path: Path, version: str) -> None:
    original = (GT / f"enc_{version}_large.pf").read_bytes()
    rng = random.Random(version)
    blob_end = (59 if version == "v2" else 58) + 3884  # node 0's padding is not authenticated
    target = tmp_path / "x.pf"
    for node in range(len(original) // NODE):
        for offset in (0, NODE - 1, rng.randrange(NODE)):
            if node == 0:
                offset = rng.randrange(10, blob_end)  # nonce, MAC, flags or encrypted part
                if version == "v2" and offset == 58:
                    offset = 59
            data = bytearray(original)
            data[node * NODE + offset] ^= 1 << rng.randrange(8)
            target.write_bytes(data)
            errors = _attempt(target, gt_path("large"))
            assert len(errors) == 2, (node, offset)
            expected = "metadata MAC" if node == 0 else f"node {node} MAC"
            assert [e.check for e in errors] == [expected, expected], (node, offset)
            assert "MAC mismatch" in str(errors[0])


def test_header_fields_checked(tmp_path: Path) -> None:
    original = (GT / "enc_v2_medium.pf").read_bytes()
    target = tmp_path / "x.pf"
    for offset, value, check in [(0, ord("X"), "file id"), (8, 3, "version"), (9, 1, "version"),
                                 (58, 0x80, "version"), (58, 0x01, "recovery")]:
        data = bytearray(original)
        data[offset] = value
        target.write_bytes(data)
        errors = _attempt(target, gt_path("medium"))
        assert [e.check for e in errors] == [check, check], offset


@pytest.mark.parametrize("cut", [0, 100, 4096, 8192, 4096 * 99, 413696 - 4096, 413696 - 1])
def test_truncation_refused(tmp_path: Path, cut: int) -> None:
    target = tmp_path / "x.pf"
    target.write_bytes((GT / "enc_v2_large.pf").read_bytes()[:cut])
    errors = _attempt(target, gt_path("large"))
    assert [e.check for e in errors] == ["size", "size"]
    if cut >= 4096:
        assert "truncated" in str(errors[0])


@pytest.mark.parametrize("extra", [b"\0", bytes(4096), os.urandom(8192)])
def test_extension_refused(tmp_path: Path, extra: bytes) -> None:
    target = tmp_path / "x.pf"
    target.write_bytes((GT / "enc_v2_medium.pf").read_bytes() + extra)
    errors = _attempt(target, gt_path("medium"))
    assert [e.check for e in errors] == ["size", "size"]
    assert "extended" in str(errors[0])


def test_wrong_key_refused() -> None:
    for name in ("small", "large"):
        errors = _attempt(GT / f"enc_v2_{name}.pf", gt_path(name), key=bytes(range(1, 17)))
        assert [e.check for e in errors] == ["metadata MAC", "metadata MAC"]
        assert "wrong key" in str(errors[0])


def test_swapped_files_refused(tmp_path: Path) -> None:
    """Two files of one mount swapped on the host: each is still bound to its own path."""
    a, b = tmp_path / "a", tmp_path / "b"
    for path, content in ((a, b"A" * 5000), (b, b"B" * 5000)):
        fd = open_rw(path, create=True)
        with ProtectedFile.open(fd, wrap_key(), str(path), create=True) as pf:
            pf.write(0, content)
        os.close(fd)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    for path in (a, b):
        errors = _attempt(path, str(path))
        assert [e.check for e in errors] == ["path", "path"]
    # a node transplanted from the other file fails its MAC
    a.write_bytes(data_a[:8192] + data_b[8192:])
    assert [e.check for e in _attempt(a, str(a))] == ["node 2 MAC", "node 2 MAC"]


def test_bad_key_argument() -> None:
    fd = os.open(GT / "enc_v2_small.pf", os.O_RDONLY)
    try:
        with pytest.raises(Exception, match="16 raw bytes"):
            ProtectedFile.open(fd, b"short", "x", readonly=True)
        with pytest.raises(Exception, match="16 raw bytes"):
            plaintext_size(fd, bytes(32), "x")
    finally:
        os.close(fd)


def test_pending_write_without_recovery_file_fails_clearly(tmp_path: Path) -> None:
    target = tmp_path / "x.pf"
    data = bytearray((GT / "enc_v2_small.pf").read_bytes())
    data[58] = 1
    target.write_bytes(data)
    fd = open_rw(target)
    try:
        with pytest.raises(PfError, match=r"pending write.*no recovery file") as info:
            ProtectedFile.open(fd, wrap_key(), gt_path("small"))
        assert info.value.check == "recovery"
        assert str(target) + ".gramine.recovery" in str(info.value)
    finally:
        os.close(fd)
