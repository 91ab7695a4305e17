"""The encrypted image (`pylos build --image-key F`): image/ as Gramine protected files.

`build/image/` mirrors image/ with every regular file encrypted (pylos.pf, bound to its path
`build/image/<rel>` relative to the workspace) and symlinks and directories as they are; it
becomes the enclave's root. The manifest still trusts every file with the SHA-256 of its
*plaintext*: at each open or exec the supervisor decrypts the file (its MACs checked), hashes
the plaintext, compares, and serves a sealed in-memory copy (the runtime's `decrypt_trusted`
hook) — so the kernel maps decrypted executables and libraries from enclave-private memory
and no plaintext of the image is written to disk by the build or the run.

The key is sealed to the enclave's MRENCLAVE (`build/image_key.sealed`, a protected file under
the simulated `_sgx_mrenclave` key) so that `run`/`start` need no key argument, like Occlum's
`--buildin-image-key` but without a plaintext copy of the key on disk. Encryption is
incremental: a file whose source size and mtime match the last build (same key) is kept.
"""

from __future__ import annotations

import errno
import hashlib
import io
import marshal
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from pylos.errors import PylosError
from pylos.hashing import write_atomic

IMAGE_DIR = "build/image"
INDEX = "build/image.index"
SEALED_KEY = "build/image_key.sealed"
IMAGE_CONFIG = "build/image_config.json"
OCCLUM_KEY = re.compile(r"^[0-9a-fA-F]{2}(-[0-9a-fA-F]{2}){15}$")


def read_image_key(path: Path) -> bytes:
    """Occlum's key file (`gen-image-key`: 16 hex bytes joined by '-'), or 16 raw bytes
    (`pylos pf gen-key`)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PylosError(f"cannot read image key '{path}': {exc.strerror}") from None
    text = data.strip().decode(errors="replace")
    if OCCLUM_KEY.match(text):
        return bytes.fromhex(text.replace("-", ""))
    if len(data) == 16:
        return data
    raise PylosError(f"image key '{path}': expected 16 hex bytes joined by '-' (as "
                     "`pylos gen-image-key` writes) or 16 raw bytes")


def gen_image_key(path: Path) -> None:
    """Occlum's `gen-image-key`: a random 128-bit key as `3a-...-f0`, mode 0600."""
    if os.path.lexists(path):
        raise PylosError(f"'{path}' already exists")
    write_atomic(path, ("-".join(f"{b:02x}" for b in os.urandom(16)) + "\n").encode(),
                 mode=0o600)


def _key_id(key: bytes) -> str:
    """Tells whether build/image was made with this key, without revealing it."""
    return hashlib.sha256(b"pylos image key id\0" + key).hexdigest()


def _encrypt_file(source: Path, target: Path, key: bytes, bound: str) -> None:
    from pylos.pf import encrypt_stream

    tmp = target.with_name(f".pylos-new-{target.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        with open(source, "rb") as plain:
            encrypt_stream(plain, os.fstat(plain.fileno()).st_size, fd, key, bound)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, target)


def encrypt_image(ws: Path, files: list[str], key: bytes,
                  progress: Callable[[int, int, int], None] | None = None) -> int:
    """Bring build/image up to date with image/ (in-image paths `files`); returns how many
    files were (re-)encrypted."""
    image, out = ws / "image", ws / IMAGE_DIR
    try:
        index = marshal.loads((ws / INDEX).read_bytes())
        if index.get("key") != _key_id(key):
            index = {}
    except (OSError, EOFError, ValueError, TypeError, AttributeError):
        index = {}
    old: dict = index.get("files", {})
    expected_links: dict[str, str] = {}
    expected_dirs: set[str] = set()
    for path in image.rglob("*"):
        rel = str(path.relative_to(image))
        if path.is_symlink():
            expected_links[rel] = os.readlink(path)
        elif path.is_dir():
            expected_dirs.add(rel)
    # Drop what image/ no longer has (deepest first), then mirror its structure.
    if out.exists():
        wanted = {f.lstrip("/") for f in files}
        for path in sorted(out.rglob("*"), key=lambda p: -len(p.parts)):
            rel = str(path.relative_to(out))
            if path.is_symlink() or path.is_file():
                if rel not in wanted and expected_links.get(rel) != (
                        os.readlink(path) if path.is_symlink() else None):
                    path.unlink()
            elif rel not in expected_dirs:
                shutil.rmtree(path)
    out.mkdir(parents=True, exist_ok=True)
    for rel in sorted(expected_dirs):
        (out / rel).mkdir(parents=True, exist_ok=True)
    for rel, text in expected_links.items():
        target = out / rel
        if target.is_symlink() and os.readlink(target) == text:
            continue
        if os.path.lexists(target):
            target.unlink()
        os.symlink(text, target)
    done = 0
    fresh: dict[str, list] = {}
    for count, inside in enumerate(files, 1):
        rel = inside.lstrip("/")
        st = os.stat(image / rel)
        stamp = [st.st_size, st.st_mtime_ns]
        target = out / rel
        if old.get(rel) != stamp or not target.is_file() or target.is_symlink():
            _encrypt_file(image / rel, target, key, f"{IMAGE_DIR}/{rel}")
            done += 1
        fresh[rel] = stamp
        if progress is not None:
            progress(count, len(files), st.st_size)
    write_atomic(ws / INDEX, marshal.dumps({"key": _key_id(key), "files": fresh}))
    return done


def remove_encrypted_image(ws: Path) -> None:
    """An integrity-only build: no encrypted image, no sealed key left behind."""
    if (ws / IMAGE_DIR).exists():
        shutil.rmtree(ws / IMAGE_DIR)
    for name in (INDEX, SEALED_KEY):
        if (ws / name).exists():
            (ws / name).unlink()


def seal_image_key(ws: Path, key: bytes, sealing_key: bytes) -> None:
    from pylos.pf import encrypt_stream

    tmp = ws / f"{SEALED_KEY}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        encrypt_stream(io.BytesIO(key), len(key), fd, sealing_key, SEALED_KEY)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, ws / SEALED_KEY)


def unseal_image_key(ws: Path, sealing_key: bytes) -> bytes:
    from pylos.pf import PfError

    try:
        fd = os.open(ws / SEALED_KEY, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise PylosError(f"cannot read the sealed image key '{SEALED_KEY}': {exc.strerror} "
                         "(rebuild with --image-key)") from None
    try:
        return _decrypt(fd, sealing_key, SEALED_KEY)
    except PfError as exc:
        raise PylosError(f"the sealed image key '{SEALED_KEY}' cannot be unsealed by this "
                         f"enclave on this platform: {exc}") from None
    finally:
        os.close(fd)


def _decrypt(fd: int, key: bytes, bound: str) -> bytes:
    """The plaintext of the protected file at `fd` (which stays open: the caller's)."""
    from pylos.pf import ProtectedFile

    pf = ProtectedFile.open(fd, key, bound, create=False, readonly=True)
    try:
        return pf.read(0, pf.size)
    finally:
        pf.close()


def decryptor(ws: Path, key: bytes) -> Callable[[int, str], bytes | None]:
    """The runtime's `decrypt_trusted` hook for this workspace's encrypted image."""
    root = str(ws / IMAGE_DIR) + "/"

    def decrypt(fd: int, host_path: str) -> bytes | None:
        if not host_path.startswith(root):
            return None  # /.pylos and the other trusted files are stored as they are
        from pylos.pf import PfError
        from pylos.runtime.policy import PolicyError

        try:
            return _decrypt(fd, key, f"{IMAGE_DIR}/{host_path[len(root):]}")
        except PfError as exc:
            raise PolicyError(errno.EPERM, f"Encrypted image file '{host_path}' cannot be "
                              f"decrypted: {exc}") from None

    return decrypt
