"""Gramine's protected-files ("PF") on-disk format: constants, node numbering, KDF, metadata.

Reference: Gramine `common/src/protected_files/` (docs/encrypted-files.md, docs/formats.md).
A PF is a sequence of 4096-byte nodes: node 0 is the metadata node (a plaintext header and an
AES-128-GCM-encrypted part holding the bound path, the plaintext size, the root MHT node's key and
MAC, and the first 3072 content bytes); then MHT nodes (96 data-node + 32 child-MHT {key, MAC}
slots) interleaved with data nodes. Every node is encrypted with its own random key and an
all-zero IV; the key and GCM tag live in the parent, so one wrong byte anywhere fails a MAC.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.cmac import CMAC

from pylos.errors import InputError, PylosError

NODE_SIZE = 4096
KEY_SIZE = 16
MAC_SIZE = 16
NONCE_SIZE = 32
IV = bytes(12)  # always zero: every node key is used for exactly one encryption
FILE_ID = b"GRAFS_PF"  # 0x46505f5346415247 little-endian
MD_USER_DATA_SIZE = 3072  # content bytes stored inside the metadata node
PATH_MAX_SIZE = 260 + 512  # NUL-terminated path field of the encrypted metadata
DATA_SLOTS = 96  # data nodes per MHT node
CHILD_SLOTS = 32  # child MHT nodes per MHT node
SLOT_SIZE = KEY_SIZE + MAC_SIZE
METADATA_KEY_LABEL = b"SGX-PROTECTED-FS-METADATA-KEY"
FLAG_HAS_PENDING_WRITE = 0x01
VERSION_V1 = 1
VERSION_V2 = 2

# Decrypted metadata ("metadata_decrypted_header_t"), 3884 bytes.
MD_PATH = 0
MD_SIZE = PATH_MAX_SIZE  # u64
MD_ROOT_KEY = MD_SIZE + 8
MD_ROOT_MAC = MD_ROOT_KEY + KEY_SIZE
MD_DATA = MD_ROOT_MAC + MAC_SIZE
MD_PLAIN_SIZE = MD_DATA + MD_USER_DATA_SIZE

# Plaintext header: file_id, major, minor, nonce, MAC (58 bytes), then v2's feature_flags byte.
HDR_NONCE = 10
HDR_MAC = HDR_NONCE + NONCE_SIZE
HDR_FLAGS = HDR_MAC + MAC_SIZE  # v2 only
BLOB_V1 = HDR_FLAGS
BLOB_V2 = HDR_FLAGS + 1

_U64 = struct.Struct("<Q")


class PfError(InputError):
    """A protected file failed a check (exit status 1); `.check` names which one (e.g.
    "metadata MAC", "path", "node 5 MAC", "size", "file id", "version", "recovery")."""

    def __init__(self, message: str, check: str) -> None:
        super().__init__(message)
        self.check = check


# --- node numbering -------------------------------------------------------------------------

def data_node_count(size: int) -> int:
    """Data nodes a plaintext of `size` bytes needs (the first 3072 bytes live in the metadata)."""
    if size <= MD_USER_DATA_SIZE:
        return 0
    return (size - MD_USER_DATA_SIZE + NODE_SIZE - 1) // NODE_SIZE


def mht_node_count(size: int) -> int:
    data = data_node_count(size)
    return 0 if data == 0 else (data - 1) // DATA_SLOTS + 1


def physical_size(size: int) -> int:
    """Host file length Gramine gives a PF of `size` plaintext bytes."""
    return NODE_SIZE * (1 + data_node_count(size) + mht_node_count(size))


def data_node_physical(d: int) -> int:
    """Physical node number of data node `d`: after the metadata, root MHT and d // 96 MHTs."""
    return d + 2 + d // DATA_SLOTS


def mht_node_physical(n: int) -> int:
    """Physical node number of MHT node `n` (root = 0 is node 1; each is followed by its data)."""
    return 1 + (1 + DATA_SLOTS) * n


def data_slot(d: int) -> int:
    """Byte offset of data node `d`'s {key, MAC} in its MHT node (MHT d // 96)."""
    return (d % DATA_SLOTS) * SLOT_SIZE


def child_mht_slot(n: int) -> int:
    """Byte offset of MHT node `n`'s {key, MAC} in its parent MHT node ((n - 1) // 32)."""
    return (DATA_SLOTS + (n - 1) % CHILD_SLOTS) * SLOT_SIZE


def mht_parent(n: int) -> int:
    return (n - 1) // CHILD_SLOTS


# --- crypto ---------------------------------------------------------------------------------

def metadata_key(kdk: bytes, nonce: bytes) -> bytes:
    """NIST SP 800-108 counter-mode KDF with AES-128-CMAC, one block (Gramine's kdf_input_t)."""
    cmac = CMAC(algorithms.AES(kdk))
    cmac.update(struct.pack("<I64s32sI", 1, METADATA_KEY_LABEL, nonce, 128))
    return cmac.finalize()


def decrypt_node(key: bytes, ciphertext: bytes, mac: bytes, what: str, check: str) -> bytes:
    try:
        return AESGCM(key).decrypt(IV, ciphertext + mac, None)
    except InvalidTag:
        raise PfError(f"{what}: MAC mismatch (the file was modified or corrupted)", check) from None


def encrypt_node(key: bytes, plaintext: bytes | bytearray | memoryview
                 ) -> tuple[memoryview, bytes]:
    """(ciphertext, tag) of one node; the key must never be used again. The ciphertext is a
    view, not a copy (a flush handles thousands of nodes)."""
    sealed = AESGCM(key).encrypt(IV, plaintext, None)
    return memoryview(sealed)[:-MAC_SIZE], sealed[-MAC_SIZE:]


# --- metadata node --------------------------------------------------------------------------

def check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray):
        raise PylosError(f"a protected-files key is {KEY_SIZE} raw bytes, not {type(key).__name__}")
    if len(key) != KEY_SIZE:
        raise PylosError(f"a protected-files key is {KEY_SIZE} raw bytes, got {len(key)}")


def encode_path(path: str) -> bytes:
    raw = os.fsencode(path)  # host names need not be UTF-8 (surrogateescape both ways)
    if b"\0" in raw:
        raise PfError(f"path {path!r} contains a NUL byte", "path")
    if len(raw) >= PATH_MAX_SIZE:
        raise PfError(f"path is {len(raw)} bytes; protected files allow at most "
                      f"{PATH_MAX_SIZE - 1}", "path too long")
    return raw


class Metadata:
    """Node 0, parsed: the plaintext header fields and the decrypted part (a mutable buffer)."""

    __slots__ = ("flags", "nonce", "plain", "version")

    def __init__(self, version: int, flags: int, nonce: bytes, plain: bytearray) -> None:
        self.version = version
        self.flags = flags
        self.nonce = nonce
        self.plain = plain

    @classmethod
    def new(cls, path: str) -> Metadata:
        plain = bytearray(MD_PLAIN_SIZE)
        raw = encode_path(path)
        plain[MD_PATH:MD_PATH + len(raw)] = raw
        return cls(VERSION_V2, 0, bytes(NONCE_SIZE), plain)

    @property
    def size(self) -> int:
        return _U64.unpack_from(self.plain, MD_SIZE)[0]

    @size.setter
    def size(self, value: int) -> None:
        _U64.pack_into(self.plain, MD_SIZE, value)

    @property
    def path(self) -> str:
        raw = bytes(self.plain[MD_PATH:MD_PATH + PATH_MAX_SIZE])
        return os.fsdecode(raw.split(b"\0", 1)[0])

    def set_path(self, path: str) -> None:
        raw = encode_path(path)
        self.plain[MD_PATH:MD_PATH + PATH_MAX_SIZE] = raw.ljust(PATH_MAX_SIZE, b"\0")

    @property
    def root_key_mac(self) -> tuple[bytes, bytes]:
        return (bytes(self.plain[MD_ROOT_KEY:MD_ROOT_KEY + KEY_SIZE]),
                bytes(self.plain[MD_ROOT_MAC:MD_ROOT_MAC + MAC_SIZE]))

    def set_root(self, key: bytes, mac: bytes) -> None:
        self.plain[MD_ROOT_KEY:MD_ROOT_KEY + KEY_SIZE] = key
        self.plain[MD_ROOT_MAC:MD_ROOT_MAC + MAC_SIZE] = mac

    def seal(self, kdk: bytes, nonce: bytes, flags: int = 0) -> bytes:
        """The v2 metadata node for this content under a fresh `nonce` (so a fresh key)."""
        self.nonce = nonce
        self.version = VERSION_V2
        self.flags = flags
        blob, mac = encrypt_node(metadata_key(kdk, nonce), self.plain)
        node = b"".join((FILE_ID, bytes((VERSION_V2, 0)), nonce, mac, bytes((flags,)), blob))
        return node.ljust(NODE_SIZE, b"\0")


def parse_header(node: bytes, what: str) -> tuple[int, int]:
    """(version, feature flags) of a metadata node, with Gramine's header checks."""
    if len(node) < NODE_SIZE:
        raise PfError(f"{what}: shorter than one {NODE_SIZE}-byte node; not a protected file",
                      "size")
    if node[:8] != FILE_ID:
        raise PfError(f"{what}: not a protected file (file id is not 'GRAFS_PF')", "file id")
    major, minor = node[8], node[9]
    if major not in (VERSION_V1, VERSION_V2) or minor != 0:
        raise PfError(f"{what}: unsupported protected-files format version {major}.{minor} "
                      "(pylos reads 1.0 and 2.0)", "version")
    flags = node[HDR_FLAGS] if major == VERSION_V2 else 0
    if flags & ~FLAG_HAS_PENDING_WRITE:
        raise PfError(f"{what}: unknown feature flags 0x{flags:02x}", "version")
    return major, flags


def open_metadata(node: bytes, kdk: bytes, path: str | None, what: str) -> Metadata:
    """Parse and decrypt a metadata node; with `path`, require that exact bound path."""
    version, flags = parse_header(node, what)
    nonce = bytes(node[HDR_NONCE:HDR_NONCE + NONCE_SIZE])
    mac = bytes(node[HDR_MAC:HDR_MAC + MAC_SIZE])
    start = BLOB_V2 if version == VERSION_V2 else BLOB_V1
    blob = bytes(node[start:start + MD_PLAIN_SIZE])
    try:
        plain = AESGCM(metadata_key(kdk, nonce)).decrypt(IV, blob + mac, None)
    except InvalidTag:
        raise PfError(f"{what}: metadata MAC mismatch: wrong key, or the metadata node was "
                      "modified", "metadata MAC") from None
    md = Metadata(version, flags, nonce, bytearray(plain))
    if path is not None and md.path != path:
        raise PfError(f"{what}: the file is bound to path {md.path!r}, not {path!r} (Gramine "
                      "binds the path a file was encrypted or created under; renaming or "
                      "swapping encrypted files is refused)", "path")
    return md


# --- paths ----------------------------------------------------------------------------------

def normalize_path(path: str) -> str:
    """Gramine's `get_norm_path`: drop `.` and empty components, resolve `..` lexically.

    Absolute stays absolute (`..` at the root is dropped); relative stays relative (leading `..`
    components are kept); a path that normalizes to nothing is `.`.
    """
    absolute = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not absolute:
                parts.append("..")
            continue
        parts.append(part)
    text = "/".join(parts)
    if absolute:
        return "/" + text
    return text or "."
