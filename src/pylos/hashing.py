"""SHA-256 of trusted files, fast: parallel, each inode once, and a cache of verified hashes.

A python manifest trusts thousands of files, several of them twice (merged-/usr systems show
`/lib/x86_64-linux-gnu/` and `/usr/lib/x86_64-linux-gnu/` as the same inodes). Each (device,
inode) is hashed once per run, in a thread pool (hashlib releases the GIL on large buffers), and
the result is kept in an on-disk cache keyed by (device, inode, size, mtime, ctime): a re-render
of an unchanged tree reads no file at all. ctime cannot be set from user space, so any write or
replacement of the file invalidates its entry. Entries for files changed in the last couple of
seconds are not stored, because a second write within the same timestamp tick would leave all
five key fields equal (git's "racily clean" problem).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import time
from collections.abc import Callable, Iterable

from pylos.typing_compat import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pathlib import Path

CACHE_VERSION = 2
RACY_WINDOW_NS = 2_000_000_000
HASH_THREADS = max(2, min(8, (os.cpu_count() or 1) * 2))


def cache_dir() -> str:
    """Per-user cache directory (`PYLOS_CACHE_DIR`, else `$XDG_CACHE_HOME/pylos`). A string:
    `pylos run` reads its caches, and importing pathlib costs its start ~6 ms."""
    override = os.environ.get("PYLOS_CACHE_DIR")
    if override:
        return override
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "pylos")


class FileKey(NamedTuple):
    """The identity of one version of a file, as far as the cache is concerned."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> FileKey:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class HashCache:
    """A map `"dev:ino" -> [size, mtime_ns, ctime_ns, sha256]`, saved atomically.

    Stored with marshal: loading 10 000 entries takes ~1 ms (JSON: ~5 ms, paid by every
    `pylos run`). The file is the user's own cache; a damaged one is discarded.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, list] = {}
        self._dirty = False
        if path is not None:
            try:
                data = marshal.loads(path.read_bytes())
                if data.get("version") == CACHE_VERSION:
                    self._entries = data["entries"]
            except (OSError, ValueError, KeyError, AttributeError, EOFError, TypeError):
                self._entries = {}  # a missing or damaged cache only costs a re-hash

    @classmethod
    def default(cls) -> HashCache:
        from pathlib import Path

        return cls(Path(cache_dir(), "trusted-hashes.marshal"))

    @classmethod
    def disabled(cls) -> HashCache:
        return cls(None)

    def get(self, key: FileKey) -> str | None:
        entry = self._entries.get(f"{key.dev}:{key.ino}")
        if entry and entry[:3] == [key.size, key.mtime_ns, key.ctime_ns]:
            return entry[3]
        return None

    def put(self, key: FileKey, sha256: str) -> None:
        if self.path is None or time.time_ns() - key.ctime_ns < RACY_WINDOW_NS:
            return
        self._entries[f"{key.dev}:{key.ino}"] = [key.size, key.mtime_ns, key.ctime_ns, sha256]
        self._dirty = True

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            payload = marshal.dumps({"version": CACHE_VERSION, "entries": self._entries})
            write_atomic(self.path, payload, mode=0o600)
            self._dirty = False
        except OSError:
            pass  # an unwritable cache directory must not fail a build


def read_bytes(path: str) -> bytes:
    """The contents of the file `path` (what Path.read_bytes does, without pathlib)."""
    with open(path, "rb") as file:
        return file.read()


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a torn one."""
    import tempfile  # here: costs `pylos run` a few ms at start otherwise

    directory, name = os.path.split(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def sha256_of_fd(fd: int) -> str:
    """Hash an open file from its start, reading it once."""
    with os.fdopen(os.dup(fd), "rb") as f:
        f.seek(0)
        return hashlib.file_digest(f, "sha256").hexdigest()


def _hash_one(path: str) -> tuple[FileKey, str]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        before = FileKey.from_stat(os.fstat(fd))
        digest = sha256_of_fd(fd)
        after = FileKey.from_stat(os.fstat(fd))
    finally:
        os.close(fd)
    if before != after:
        raise OSError(f"file changed while it was being hashed: {path}")
    return before, digest


ProgressCallback = Callable[[int, int, int], None]  # (files done, of total, bytes of this one)


def hash_files(
    paths: Iterable[str],
    cache: HashCache,
    on_progress: ProgressCallback | None = None,
) -> dict[str, str]:
    """SHA-256 (hex) of every path; each inode read once, cached hashes reused.

    Raises OSError (with the path in the message) for a file that cannot be read.
    `on_progress(done, total, nbytes)` is called from this thread as each file is hashed.
    """
    by_inode: dict[tuple[int, int], list[str]] = {}
    result: dict[str, str] = {}
    pending: list[str] = []
    for path in dict.fromkeys(paths):
        st = os.stat(path)
        key = FileKey.from_stat(st)
        group = by_inode.setdefault((key.dev, key.ino), [])
        group.append(path)
        if len(group) > 1:
            continue
        cached = cache.get(key)
        if cached is not None:
            result[path] = cached
        else:
            pending.append(path)

    total = len(pending)
    if pending:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
            futures = {pool.submit(_hash_one, p): p for p in pending}
            for done, future in enumerate(as_completed(futures), 1):
                key, digest = future.result()
                result[futures[future]] = digest
                cache.put(key, digest)
                if on_progress is not None:
                    on_progress(done, total, key.size)

    for group in by_inode.values():
        for alias in group[1:]:
            result[alias] = result[group[0]]
    return result
