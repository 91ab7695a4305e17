"""The node cipher's C helper (pylos.pf.native): the same bytes as `cryptography`, tampering
found at the right node, and files written by either path read by the other."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pf_support import walk

from pylos.pf import file as pf_file
from pylos.pf.file import ProtectedFile
from pylos.pf.format import PfError
from pylos.pf.native import node_cipher

from support import read_protected

NODE = 4096
IV = bytes(12)

cipher = node_cipher()
pytestmark = pytest.mark.skipif(cipher is None, reason="the helper cannot be built here")


def test_helper_encrypts_each_node_as_cryptography_does():
    count = 97
    keys, plain = os.urandom(16 * count), os.urandom(NODE * count)
    sealed, slots = cipher.encrypt(plain, keys, count)
    for i in range(count):
        expected = AESGCM(keys[16 * i:16 * i + 16]).encrypt(IV, plain[NODE * i:NODE * (i + 1)],
                                                            None)
        assert bytes(sealed[NODE * i:NODE * (i + 1)]) == expected[:-16]
        assert slots[32 * i:32 * (i + 1)] == keys[16 * i:16 * (i + 1)] + expected[-16:]


def test_helper_reads_decrypts_and_names_the_first_tampered_node(tmp_path):
    count = 40
    keys, plain = os.urandom(16 * count), os.urandom(NODE * count)
    sealed, slots = cipher.encrypt(plain, keys, count)
    host = tmp_path / "nodes"
    host.write_bytes(NODE * b"x" + sealed)  # the run starts at the second node
    fd = os.open(host, os.O_RDONLY)
    try:
        decrypted, bad = cipher.read(fd, NODE, slots, count)
        assert bad == -1 and bytes(decrypted) == plain
        wrong_tag = bytearray(slots)
        wrong_tag[32 * 3 + 20] ^= 1  # node 3's tag
        assert cipher.read(fd, NODE, bytes(wrong_tag), count)[1] == 3
        with pytest.raises(EOFError) as short:  # a run past the end: the bytes there
            cipher.read(fd, 2 * NODE, slots, count)
        assert short.value.args[0] == (count - 1) * NODE
    finally:
        os.close(fd)
    sealed[NODE * 17 + 5] ^= 1
    sealed[NODE * 30] ^= 1
    host.write_bytes(NODE * b"x" + sealed)
    fd = os.open(host, os.O_RDONLY)
    try:
        assert cipher.read(fd, NODE, slots, count)[1] == 17
    finally:
        os.close(fd)
    with pytest.raises(OSError):  # not a readable descriptor
        cipher.read(fd, NODE, slots, count)


def _write(path: str, key: bytes, content: bytes) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with ProtectedFile.open(fd, key, path, create=True) as pf:
            pf.write(0, content)
    finally:
        os.close(fd)


def _read(path: str, key: bytes) -> bytes:
    return read_protected(path, path, key)


@pytest.mark.parametrize("writer_native", [True, False])
def test_files_of_either_path_read_by_the_other(tmp_path, monkeypatch, writer_native):
    key, content = os.urandom(16), os.urandom(3 * 1024 * 1024 + 777)
    path = str(tmp_path / "f")
    monkeypatch.setattr(pf_file, "node_cipher", lambda: cipher if writer_native else None)
    _write(path, key, content)
    monkeypatch.setattr(pf_file, "node_cipher", lambda: None if writer_native else cipher)
    assert _read(path, key) == content
    assert walk((tmp_path / "f").read_bytes(), key)["plain"] == content  # an independent walker


def test_a_tampered_node_in_a_run_fails_with_its_number(tmp_path):
    key, path = os.urandom(16), str(tmp_path / "f")
    _write(path, key, os.urandom(64 * NODE))
    with open(path, "r+b") as f:  # data node 10 is physical node 12 (metadata, root MHT first)
        f.seek(12 * NODE + 100)
        byte = f.read(1)
        f.seek(12 * NODE + 100)
        f.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(PfError, match=r"data node 10 \(node 12\): MAC mismatch"):
        _read(path, key)
