"""The node cipher's C helper (`nodecrypt.c`): AES-128-GCM over a run of nodes per call.

From Python each node costs a cipher object and a call, ~5 µs of which the cipher is ~1.5 µs;
that caps an encrypted mount near 850 MB/s on one core before any other work. The helper
does a run in one call with the same cipher (OpenSSL's EVP AES-128-GCM), so the bytes, and
the protected-files format, are unchanged. It is compiled once per installation (source hash
in the name) into `<pkglibdir>/native/`, the installation's own directory, and loaded with
ctypes. Without a C compiler or OpenSSL's headers, or with `PYLOS_PF_NATIVE=0`, there is no
helper and `pylos.pf` uses `cryptography` node by node.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from functools import cache

from pylos.install import pkglibdir
from pylos.pf.format import KEY_SIZE, MAC_SIZE, NODE_SIZE

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nodecrypt.c")
OPENSSL_FAILED = -2


class NodeCipher:
    """The loaded helper."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._encrypt = library.pf_encrypt_nodes
        self._read = library.pf_read_nodes
        for function in (self._encrypt, self._read):
            function.restype = ctypes.c_long

    def read(self, fd: int, offset: int, slots: bytes, count: int) -> tuple[bytearray, int]:
        """(plaintext of the `count` consecutive nodes at `offset` of `fd`, -1 or the index of
        the first node whose tag does not match, as `slots` hold each node's key and tag);
        a short read raises EOFError(bytes read), a failed one OSError."""
        plaintext = bytearray(count * NODE_SIZE)
        target = (ctypes.c_char * len(plaintext)).from_buffer(plaintext)
        got = ctypes.c_long()
        bad = self._read(fd, ctypes.c_longlong(offset), target, slots, ctypes.c_long(count),
                         ctypes.byref(got))
        if got.value < 0:
            raise OSError(-got.value, os.strerror(-got.value))
        if got.value != len(plaintext):
            raise EOFError(got.value)
        if bad == OPENSSL_FAILED:
            raise OSError("OpenSSL's AES-GCM failed")
        return plaintext, bad

    def encrypt(self, plaintext: bytes, keys: bytes, count: int) -> tuple[bytearray, bytes]:
        """(ciphertexts, slots) of `count` consecutive nodes, node i under keys[i]; slot i
        is keys[i] and node i's tag, as its parent stores them."""
        ciphertext = bytearray(count * NODE_SIZE)
        slots = ctypes.create_string_buffer(count * (KEY_SIZE + MAC_SIZE))
        target = (ctypes.c_char * len(ciphertext)).from_buffer(ciphertext)
        assert len(plaintext) == count * NODE_SIZE and len(keys) >= count * KEY_SIZE
        if self._encrypt(plaintext, target, keys, slots, ctypes.c_long(count)) != 0:
            raise OSError("OpenSSL's AES-GCM failed")
        return ciphertext, slots.raw


def library_path() -> str:
    with open(SOURCE, "rb") as source:
        digest = hashlib.sha256(source.read()).hexdigest()[:16]
    return os.path.join(pkglibdir(), "native", f"nodecrypt-{digest}.so")


def build() -> str | None:
    """Compile the helper unless it is there; its path, or None when it cannot be built."""
    target = library_path()
    if os.path.exists(target):
        return target
    import subprocess  # only to build: every encrypted mount's server imports this module

    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = f"{target}.{os.getpid()}.tmp"
    try:
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-o", partial,
                        SOURCE, "-lcrypto"], check=True, capture_output=True, timeout=120)
        os.rename(partial, target)  # atomic: a concurrent build's result is as good
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


@cache
def node_cipher() -> NodeCipher | None:
    """The helper, built on first need; None without one (then each node goes through
    `cryptography`)."""
    if os.environ.get("PYLOS_PF_NATIVE") == "0":
        return None
    path = build()
    if path is None:
        return None
    try:
        return NodeCipher(ctypes.CDLL(path))
    except (OSError, AttributeError):
        return None
