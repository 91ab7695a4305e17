"""Whole-file encryption and decryption at streaming speed (what `pylos pf` uses).

The physical layout puts every MHT node right before its 96 data nodes, so a file is processed
one MHT group (up to 97 nodes, 388 KiB) per read or write. Per node only the unavoidable work is
left in Python: a fresh AES-GCM key object and one AES-GCM call on a slice of a group-sized
buffer; a group is read with one read and written with one pwritev.

Decryption places each node's tag right after its ciphertext, as `decrypt_into` wants, by
walking a group backwards: the 16 bytes overwritten belong to the next node, already decrypted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pylos.pf.file import ProtectedFile
from pylos.pf.format import (
    CHILD_SLOTS,
    DATA_SLOTS,
    FLAG_HAS_PENDING_WRITE,
    IV,
    KEY_SIZE,
    MAC_SIZE,
    MD_DATA,
    MD_USER_DATA_SIZE,
    NODE_SIZE,
    NONCE_SIZE,
    SLOT_SIZE,
    Metadata,
    PfError,
    check_key,
    child_mht_slot,
    data_node_count,
    decrypt_node,
    encrypt_node,
    mht_node_count,
    mht_node_physical,
    mht_parent,
    open_metadata,
    parse_header,
    physical_size,
)

Progress = Callable[[int], None]
GROUP_BYTES = DATA_SLOTS * NODE_SIZE


def _read_exact(src: BinaryIO, view: memoryview, what: str) -> None:
    done = 0
    while done < len(view):
        got = src.readinto(view[done:])
        if not got:
            raise PfError(f"{what}: the input shrank while it was being encrypted", "size")
        done += got


def encrypt_stream(src: BinaryIO, size: int, dst_fd: int, key: bytes, path: str,
                   progress: Progress | None = None) -> None:
    """Write the protected file of the `size` bytes read from `src` to the empty `dst_fd`,
    bound to `path` (no fsync: the caller commits the file)."""
    check_key(key)
    what = f"encrypting for '{path}'"
    md = Metadata.new(path)
    head = min(size, MD_USER_DATA_SIZE)
    _read_exact(src, memoryview(md.plain)[MD_DATA:MD_DATA + head], what)
    if progress:
        progress(head)
    data_nodes, mht_nodes = data_node_count(size), mht_node_count(size)
    mhts = [bytearray(NODE_SIZE) for _ in range(mht_nodes)]
    src_view = memoryview(bytearray(GROUP_BYTES))
    remaining = size - head
    for n in range(mht_nodes):
        count = min(DATA_SLOTS, data_nodes - DATA_SLOTS * n)
        want = min(remaining, count * NODE_SIZE)
        _read_exact(src, src_view[:want], what)
        if want < count * NODE_SIZE:
            src_view[want:count * NODE_SIZE] = bytes(count * NODE_SIZE - want)
        keys = os.urandom(KEY_SIZE * count)
        slots: list[bytes] = []
        nodes: list[memoryview] = []
        for a in range(0, count * NODE_SIZE, NODE_SIZE):
            k = keys[a >> 8:(a >> 8) + KEY_SIZE]  # a / NODE_SIZE * KEY_SIZE
            sealed = AESGCM(k).encrypt(IV, src_view[a:a + NODE_SIZE], None)
            slots += (k, sealed[NODE_SIZE:])
            nodes.append(memoryview(sealed)[:NODE_SIZE])
        mhts[n][:count * SLOT_SIZE] = b"".join(slots)
        _pwritev_all(dst_fd, nodes, (mht_node_physical(n) + 1) * NODE_SIZE)
        remaining -= want
        if progress:
            progress(want)
    keys = os.urandom(KEY_SIZE * mht_nodes)
    for n in reversed(range(mht_nodes)):  # children (higher numbers) before their parents
        k = keys[n * KEY_SIZE:(n + 1) * KEY_SIZE]
        ciphertext, mac = encrypt_node(k, mhts[n])
        if n == 0:
            md.set_root(k, mac)
        else:
            s = child_mht_slot(n)
            mhts[mht_parent(n)][s:s + SLOT_SIZE] = k + mac
        _pwrite_all(dst_fd, ciphertext, mht_node_physical(n) * NODE_SIZE)
    md.size = size
    _pwrite_all(dst_fd, md.seal(key, os.urandom(NONCE_SIZE)), 0)


def decrypt_stream(src_fd: int, dst: BinaryIO, key: bytes, path: str | None, what: str,
                   progress: Progress | None = None, recovery_path: str | None = None) -> int:
    """Decrypt the whole protected file on `src_fd` into `dst`, checking every MAC (and with
    `path`, the bound path); return the plaintext size. `progress` gets input bytes."""
    check_key(key)
    node = os.pread(src_fd, NODE_SIZE, 0)
    _, flags = parse_header(node, what)
    if flags & FLAG_HAS_PENDING_WRITE:  # rare: let the random-access reader apply the journal
        return _decrypt_pending(src_fd, dst, key, path, what, progress, recovery_path)
    md = open_metadata(node, key, path, what)
    size = md.size
    length = os.fstat(src_fd).st_size
    expected = physical_size(size)
    if length != expected:
        how = "truncated" if length < expected else "extended"
        raise PfError(f"{what}: the host file is {length} bytes, but its metadata describes "
                      f"{size} plaintext bytes, which take {expected} bytes ({how}?)", "size")
    head = min(size, MD_USER_DATA_SIZE)
    dst.write(md.plain[MD_DATA:MD_DATA + head])
    if progress:  # counts input bytes, so it ends at the host file's size
        progress(NODE_SIZE)
    data_nodes, mht_nodes = data_node_count(size), mht_node_count(size)
    parents: dict[int, bytes] = {}
    buf_view = memoryview(bytearray((DATA_SLOTS + 1) * NODE_SIZE + MAC_SIZE))
    plain_view = memoryview(bytearray(GROUP_BYTES))
    remaining = size - head
    for n in range(mht_nodes):
        count = min(DATA_SLOTS, data_nodes - DATA_SLOTS * n)
        phys = mht_node_physical(n)
        got = os.preadv(src_fd, [buf_view[:(count + 1) * NODE_SIZE]], phys * NODE_SIZE)
        if got != (count + 1) * NODE_SIZE:
            raise PfError(f"{what}: node {phys + got // NODE_SIZE} is missing (truncated)",
                          "size")
        if n == 0:
            mkey, mmac = md.root_key_mac
        else:
            parent = parents[mht_parent(n)]
            s = child_mht_slot(n)
            mkey, mmac = parent[s:s + KEY_SIZE], parent[s + KEY_SIZE:s + SLOT_SIZE]
        mht = decrypt_node(mkey, bytes(buf_view[:NODE_SIZE]), mmac,
                           f"{what}: MHT node {n} (node {phys})", f"node {phys} MAC")
        if n * CHILD_SLOTS + 1 < mht_nodes:
            parents[n] = mht
        for i in reversed(range(count)):
            a = (i + 1) * NODE_SIZE
            s = i * SLOT_SIZE
            buf_view[a + NODE_SIZE:a + NODE_SIZE + MAC_SIZE] = mht[s + KEY_SIZE:s + SLOT_SIZE]
            try:
                AESGCM(mht[s:s + KEY_SIZE]).decrypt_into(
                    IV, buf_view[a:a + NODE_SIZE + MAC_SIZE], None,
                    plain_view[i * NODE_SIZE:(i + 1) * NODE_SIZE])
            except InvalidTag:
                d = n * DATA_SLOTS + i
                raise PfError(f"{what}: data node {d} (node {phys + 1 + i}): MAC mismatch (the "
                              "file was modified or corrupted)", f"node {phys + 1 + i} MAC"
                              ) from None
        want = min(remaining, count * NODE_SIZE)
        dst.write(plain_view[:want])
        remaining -= want
        if progress:
            progress((count + 1) * NODE_SIZE)
    return size


def _decrypt_pending(src_fd: int, dst: BinaryIO, key: bytes, path: str | None, what: str,
                     progress: Progress | None, recovery_path: str | None) -> int:
    with ProtectedFile.open(src_fd, key, path, readonly=True,
                            recovery_path=recovery_path) as pf:
        size = pf.size
        chunk = 1 << 20
        for offset in range(0, size, chunk):
            data = pf.read(offset, chunk)
            dst.write(data)
            if progress:
                progress(len(data))
        return size


def _pwritev_all(fd: int, buffers: list[memoryview], offset: int) -> None:
    done = os.pwritev(fd, buffers, offset)
    if done != NODE_SIZE * len(buffers):  # short write: finish the rest plainly
        _pwrite_all(fd, b"".join(buffers)[done:], offset + done)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done
