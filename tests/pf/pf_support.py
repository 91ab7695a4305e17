"""Helpers for the protected-files tests: ground truth paths and an independent PF walker."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pylos.pf.format import metadata_key

from support import TESTDATA

GT = TESTDATA / "gramine-pf"
SIZES = {"empty": 0, "small": 100, "medium": 10000, "large": 401288}
NODE = 4096


def wrap_key() -> bytes:
    return (GT / "wrap_key.bin").read_bytes()


def gt_path(name: str) -> str:
    """The path Gramine bound into the ground-truth files of this size."""
    return f"encrypted/{name}.bin"


def walk(data: bytes, key: bytes) -> dict:
    """Decode a v2 PF with the format spelled out here, independently of pylos.pf:
    {"length", "size", "path", "nodes": {physical: kind}, "slots": {physical: used-slot list},
    "header": plaintext header fields, "plain": content}."""
    assert data[:8] == b"GRAFS_PF"
    major = data[8]
    blob_at = 59 if major == 2 else 58
    nonce, mac = data[10:42], data[42:58]
    md = AESGCM(metadata_key(key, nonce)).decrypt(bytes(12), data[blob_at:blob_at + 3884] + mac,
                                                  None)
    path = os.fsdecode(md[:772].split(b"\0")[0])
    (size,) = struct.unpack_from("<Q", md, 772)
    nodes = {0: "metadata"}
    slots: dict[int, list[int]] = {}
    plain = bytearray(md[812:812 + min(size, 3072)])
    if size > 3072:
        data_count = -(-(size - 3072) // NODE)
        mht_plain: dict[int, bytes] = {}
        mht_count = (data_count - 1) // 96 + 1
        for n in range(mht_count):
            phys = 1 + 97 * n
            if n == 0:
                k, m = md[780:796], md[796:812]
            else:
                parent = mht_plain[(n - 1) // 32]
                s = (96 + (n - 1) % 32) * 32
                k, m = parent[s:s + 16], parent[s + 16:s + 32]
            mht_plain[n] = AESGCM(k).decrypt(bytes(12), data[phys * NODE:(phys + 1) * NODE] + m,
                                             None)
            nodes[phys] = f"mht {n}"
            slots[phys] = [i for i in range(128) if any(mht_plain[n][i * 32:(i + 1) * 32])]
        for d in range(data_count):
            phys = d + 2 + d // 96
            mht = mht_plain[d // 96]
            s = (d % 96) * 32
            node = AESGCM(mht[s:s + 16]).decrypt(bytes(12), data[phys * NODE:(phys + 1) * NODE]
                                                 + mht[s + 16:s + 32], None)
            nodes[phys] = f"data {d}"
            plain += node
        del plain[size:]
    return {"length": len(data), "size": size, "path": path, "nodes": nodes, "slots": slots,
            "header": (data[:10], data[58] if major == 2 else None), "plain": bytes(plain),
            "padding": data[blob_at + 3884:NODE]}


def open_rw(path: Path, create: bool = False) -> int:
    return os.open(path, os.O_RDWR | (os.O_CREAT if create else 0) | os.O_CLOEXEC, 0o600)
