"""Random access to one protected file: `ProtectedFile` (Gramine's pf_open/read/write/...).

Reading or writing byte N decrypts only the nodes on N's path (metadata, root MHT, the MHT
nodes above its data node, the data node), through a bounded LRU cache of decrypted nodes with
dirty tracking. A read of a run of at least `STREAM_RUN` uncached nodes is decrypted straight
into the reply instead (the kernel's page cache keeps what a large read brought in; caching it
here too would only evict the nodes of small, random reads and cost a Python object per node).
A flush gives every dirty node a fresh random key (so IV 0 stays safe), then the
MHT nodes above them bottom-up, then the metadata under a fresh nonce.

Durability: a flush is a redo-journal transaction, Gramine 1.9's recovery scheme. The new
encrypted nodes and metadata go to the recovery file as {u64 physical node number, node} records
and are fsynced; then HAS_PENDING_WRITE is set in the on-disk metadata (a one-byte write outside
the authenticated part) and fsynced; then the nodes are written in place and fsynced; then the
flag is cleared and fsynced. A crash before the flag is durable leaves the old file untouched; a
crash after it leaves the flag set and a complete journal, which the next open replays (the new
state). The recovery file is `recovery_path` (Gramine's `<file>.gramine.recovery`, for
`enable_recovery = true` mounts) or, without one, `<host file>.pylos-journal`: pylos journals
every flush, because a torn file would be unreadable forever, and the cost is proportional to
the dirty nodes. With no pending write the file is exactly what Gramine writes (flag 0).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from types import TracebackType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pylos.errors import PylosError
from pylos.pf.format import (
    DATA_SLOTS,
    FLAG_HAS_PENDING_WRITE,
    HDR_FLAGS,
    IV,
    KEY_SIZE,
    MAC_SIZE,
    MD_DATA,
    MD_USER_DATA_SIZE,
    NODE_SIZE,
    NONCE_SIZE,
    SLOT_SIZE,
    VERSION_V2,
    Metadata,
    PfError,
    check_key,
    child_mht_slot,
    data_node_count,
    data_node_physical,
    data_slot,
    decrypt_node,
    encode_path,
    encrypt_node,
    mht_node_count,
    mht_node_physical,
    mht_parent,
    open_metadata,
    parse_header,
    physical_size,
)
from pylos.pf.native import node_cipher

DEFAULT_CACHE_NODES = 4096  # 16 MiB of plaintext (Gramine keeps 48 nodes): a cache full of dirty
# nodes costs a crash-safe flush (journal, four fsyncs), so fewer, larger flushes write faster
STREAM_RUN = 16  # uncached nodes read in one run (64 KiB) that bypass the node cache
JOURNAL_SUFFIX = ".pylos-journal"
GRAMINE_RECOVERY_SUFFIX = ".gramine.recovery"
_RECORD = struct.Struct("<Q")
RECORD_SIZE = _RECORD.size + NODE_SIZE
_IOV_MAX = 1024

_MHT, _DATA = 1, 2


class _Node:
    __slots__ = ("dirty", "kind", "number", "physical", "plain")

    def __init__(self, kind: int, number: int, physical: int, plain: bytearray) -> None:
        self.kind = kind
        self.number = number
        self.physical = physical
        self.plain = plain
        self.dirty = False


def host_path_of(fd: int) -> str | None:
    """The host path an fd was opened at (following renames); None once unlinked."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    if not target.startswith("/") or target.endswith(" (deleted)"):
        return None
    return target


def read_journal(path: str) -> list[tuple[int, bytes]] | None:
    """The records of a recovery file, or None when there is none (or it is empty)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    if not data:
        return None
    if len(data) % RECORD_SIZE:
        raise PfError(f"recovery file '{path}' is {len(data)} bytes, not a whole number of "
                      f"{RECORD_SIZE}-byte records", "recovery")
    return [(_RECORD.unpack_from(data, i)[0], data[i + 8:i + RECORD_SIZE])
            for i in range(0, len(data), RECORD_SIZE)]


def _journal_candidates(recovery_path: str | None, host: str | None) -> list[str]:
    names = [recovery_path] if recovery_path else []
    if host:
        names += [host + GRAMINE_RECOVERY_SUFFIX, host + JOURNAL_SUFFIX]
    return list(dict.fromkeys(names))


def _find_journal(recovery_path: str | None, host: str | None, what: str
                  ) -> list[tuple[int, bytes]]:
    names = _journal_candidates(recovery_path, host)
    for name in names:
        records = read_journal(name)
        if records is not None:
            return records
    raise PfError(f"{what}: the file has a pending write (HAS_PENDING_WRITE is set: a flush was "
                  "interrupted) but no recovery file was found (looked for "
                  f"{', '.join(repr(n) for n in names) or 'nothing: unknown host path'})",
                  "recovery")


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _pwritev_all(fd: int, buffers: list[bytes | memoryview], offset: int) -> None:
    """Write `buffers` one after another from `offset`, in pwritev calls of at most IOV_MAX
    buffers (no copy into one blob: a flush's journal is as large as its dirty nodes)."""
    for start in range(0, len(buffers), _IOV_MAX):
        chunk = buffers[start:start + _IOV_MAX]
        size = sum(len(buffer) for buffer in chunk)
        written = os.pwritev(fd, chunk, offset)
        if written != size:  # short write: finish the rest plainly
            _pwrite_all(fd, b"".join(chunk)[written:], offset + written)
        offset += size


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_nodes(fd: int, records: Sequence[tuple[int, bytes | memoryview]]) -> None:
    """Write nodes in place, a run of consecutive physical nodes at a time (a node listed
    twice, as a Gramine recovery file may, is written in list order)."""
    records = sorted(records, key=lambda record: record[0])
    start = 0
    while start < len(records):
        end = start + 1
        while end < len(records) and records[end][0] == records[end - 1][0] + 1:
            end += 1
        _pwritev_all(fd, [node for _, node in records[start:end]], records[start][0] * NODE_SIZE)
        start = end


def plaintext_size(fd: int, key: bytes, path: str | None, *, recovery_path: str | None = None
                   ) -> int:
    """The plaintext size of a protected file, from its metadata node alone.

    A file with an interrupted flush reports the size its recovery file will give it.
    """
    check_key(key)
    what = f"protected file '{path}'" if path else "protected file"
    node = os.pread(fd, NODE_SIZE, 0)
    _, flags = parse_header(node, what)
    if flags & FLAG_HAS_PENDING_WRITE:
        try:
            records = _find_journal(recovery_path, host_path_of(fd), what)
        except PfError:
            # a flush in another thread may have just finished and emptied its journal
            node = os.pread(fd, NODE_SIZE, 0)
            if parse_header(node, what)[1] & FLAG_HAS_PENDING_WRITE:
                raise
            records = []
        metadata = [n for phys, n in records if phys == 0]
        if metadata:
            node = metadata[-1]
    return open_metadata(node, key, path, what).size


class ProtectedFile:
    """One open Gramine protected file on a host fd (which the caller owns and closes).

    Use one object per host file (share it between the fds of a process tree): it owns the
    file's recovery file, and a second writer would corrupt it. Host I/O errors propagate as
    OSError; a failed flush makes the object unusable (the file keeps its previous version).
    """

    def __init__(self, fd: int, key: bytes, path: str | None, md: Metadata, *, readonly: bool,
                 recovery_path: str | None, cache_nodes: int, physical: int,
                 disk_version: int | None, overlay: dict[int, bytes] | None) -> None:
        self._fd = fd
        self._kdk = bytes(key)
        self._path = path
        self._md = md
        self._readonly = readonly
        self._recovery_path = recovery_path
        self._capacity = max(8, cache_nodes)
        self._physical = physical
        self._disk_version = disk_version
        self._overlay = overlay
        self._cache: OrderedDict[int, _Node] = OrderedDict()
        self._root = _Node(_MHT, 0, 1, bytearray(NODE_SIZE))
        size = md.size
        self._disk_data = data_node_count(size)  # data / MHT nodes that exist on disk
        self._disk_mht = mht_node_count(size)
        self._need_writing = False
        self._journal_fd: int | None = None
        self._journal_name: str | None = None
        self._failed: str | None = None
        self._closed = False
        self._lock = threading.RLock()
        self.node_reads = 0  # physical nodes read from the host file (tests count them)
        self.node_writes = 0

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, fd: int, key: bytes, path: str | None, *, create: bool = False,
             readonly: bool = False, recovery_path: str | None = None,
             cache_nodes: int = DEFAULT_CACHE_NODES) -> ProtectedFile:
        """Open (or with `create`, initialise as empty) the protected file on `fd`.

        `path` is the path bound into the metadata; None skips the check (read-only use, like
        `gramine-sgx-pf-crypt decrypt` without --verify). A pending write left by a crash is
        replayed from the recovery file (in memory only when `readonly`).
        """
        check_key(key)
        if path is None and not readonly:
            raise PylosError("a protected file opened for writing needs its bound path")
        what = f"protected file '{path}'" if path else "protected file"
        length = os.fstat(fd).st_size
        if create:
            if readonly:
                raise PylosError("cannot create a protected file read-only")
            encode_path(path or "")
            cls._remove_stale_journals(recovery_path, host_path_of(fd))  # old content's
            disk_version = cls._disk_version_of(fd, length)
            pf = cls(fd, key, path, Metadata.new(path or ""), readonly=False,
                     recovery_path=recovery_path, cache_nodes=cache_nodes, physical=length,
                     disk_version=disk_version, overlay=None)
            pf._need_writing = True
            pf.flush()
            return pf

        if length < NODE_SIZE:
            raise PfError(f"{what}: the host file is {length} bytes; a protected file is at "
                          f"least one {NODE_SIZE}-byte node (truncated?)", "size")
        node = os.pread(fd, NODE_SIZE, 0)
        version, flags = parse_header(node, what)
        overlay: dict[int, bytes] | None = None
        if flags & FLAG_HAS_PENDING_WRITE:
            host = host_path_of(fd)
            records = _find_journal(recovery_path, host, what)
            if readonly:
                overlay = dict(records)
                node = overlay.get(0, node)
            else:
                cls._replay(fd, key, records, what)
                length = os.fstat(fd).st_size
                node = os.pread(fd, NODE_SIZE, 0)
                version, flags = parse_header(node, what)
        if not readonly:  # the flag is clear now: any recovery file is spent or stale
            cls._remove_stale_journals(recovery_path, host_path_of(fd))
        md = open_metadata(node, key, path, what)
        expected = physical_size(md.size)
        if overlay is None and length != expected:
            how = "truncated" if length < expected else "extended"
            raise PfError(f"{what}: the host file is {length} bytes, but its metadata describes "
                          f"{md.size} plaintext bytes, which take {expected} bytes ({how}?)",
                          "size")
        pf = cls(fd, key, path, md, readonly=readonly, recovery_path=recovery_path,
                 cache_nodes=cache_nodes, physical=length, disk_version=version, overlay=overlay)
        pf.node_reads = 1
        if md.size > MD_USER_DATA_SIZE:
            root_key, root_mac = md.root_key_mac
            pf._root.plain = bytearray(decrypt_node(
                root_key, pf._read_physical(1), root_mac, f"{what}: root MHT node (node 1)",
                "node 1 MAC"))
        return pf

    @staticmethod
    def _disk_version_of(fd: int, length: int) -> int | None:
        if length < NODE_SIZE:
            return None
        try:
            return parse_header(os.pread(fd, NODE_SIZE, 0), "")[0]
        except PfError:
            return None

    @staticmethod
    def _replay(fd: int, key: bytes, records: list[tuple[int, bytes]], what: str) -> None:
        """Finish an interrupted flush: nodes in place, then the metadata, then the length."""
        nodes = [(phys, node) for phys, node in records if phys != 0]
        metadata = [node for phys, node in records if phys == 0]
        if any(len(node) != NODE_SIZE for _, node in records):
            raise PfError(f"{what}: recovery file holds a partial node", "recovery")
        _write_nodes(fd, nodes)
        os.fsync(fd)
        if metadata:
            # Written with the flag still set, so a torn write here is replayed again.
            node = bytearray(metadata[-1])
            md = open_metadata(bytes(node), key, None, f"{what} (recovery file)")
            if node[8] == VERSION_V2:
                node[HDR_FLAGS] |= FLAG_HAS_PENDING_WRITE
            _pwrite_all(fd, node, 0)
            os.ftruncate(fd, physical_size(md.size))
            os.fsync(fd)
        if os.pread(fd, NODE_SIZE, 0)[8] == VERSION_V2:
            _pwrite_all(fd, b"\0", HDR_FLAGS)
            os.fsync(fd)

    @staticmethod
    def _remove_stale_journals(recovery_path: str | None, host: str | None) -> None:
        # With the flag clear, a recovery file is either replayed already or left over from a
        # flush that crashed before committing; it must not be mistaken for the journal of a
        # later interrupted flush.
        for name in _journal_candidates(recovery_path, host):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    # --- public API ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._md.size

    @property
    def path(self) -> str | None:
        return self._path

    @property
    def recovery_path(self) -> str | None:
        return self._recovery_path

    @recovery_path.setter
    def recovery_path(self, name: str | None) -> None:
        """Move the recovery file (e.g. after the host file was renamed); takes effect at the
        next flush. The host file and its recovery file must always be renamed together: an
        open looks for the recovery file next to the file's current name."""
        with self._lock:
            self._recovery_path = name

    @property
    def cached_nodes(self) -> int:
        """Decrypted MHT and data nodes held (the root MHT and metadata are always held)."""
        return len(self._cache)

    def __enter__(self) -> ProtectedFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def read(self, offset: int, length: int) -> bytes:
        return b"".join(self.read_buffers(offset, length))

    def read_buffers(self, offset: int, length: int) -> list[bytes | memoryview]:
        """`read` as the buffers that make it up, not joined into one (a FUSE server writes
        them out with one writev): views of decrypted nodes, valid until the next call on
        this file."""
        with self._lock:
            self._check_usable()
            size = self._md.size
            if offset < 0 or length < 0:
                raise PylosError(f"bad read range: offset {offset}, length {length}")
            end = min(size, offset + length)
            if offset >= end:
                return []
            parts: list[bytes | memoryview] = []
            pos = offset
            if pos < MD_USER_DATA_SIZE:
                stop = min(end, MD_USER_DATA_SIZE)
                parts.append(bytes(self._md.plain[MD_DATA + pos:MD_DATA + stop]))
                pos = stop
            window = max(1, self._capacity // 2)
            while pos < end:
                first = (pos - MD_USER_DATA_SIZE) // NODE_SIZE
                last = min((end - 1 - MD_USER_DATA_SIZE) // NODE_SIZE, first + window - 1)
                streamed = self._prefetch(first, last)
                d = first
                while d <= last:
                    within = pos - MD_USER_DATA_SIZE - d * NODE_SIZE
                    run = streamed.get(d)
                    if run is not None:  # decrypted for this read only
                        run_last, plain = run
                        n = min(end - pos, (run_last - d + 1) * NODE_SIZE - within)
                        parts.append(memoryview(plain)[within:within + n])
                        d = run_last + 1
                    else:
                        n = min(end - pos, NODE_SIZE - within)
                        parts.append(
                            memoryview(self._data(d, whole=False).plain)[within:within + n])
                        d += 1
                    pos += n
                self._trim()
            return parts

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Write `data` at `offset`; a gap past the end of the file reads as zeros."""
        with self._lock:
            self._check_writable()
            if offset < 0:
                raise PylosError(f"bad write offset {offset}")
            view = memoryview(data).cast("B")
            if not view:
                return 0
            if offset > self._md.size:
                self._write(self._md.size, None, offset - self._md.size)
            self._write(offset, view, len(view))
            self._trim()
            return len(view)

    def truncate(self, size: int) -> None:
        with self._lock:
            self._check_writable()
            if size < 0:
                raise PylosError(f"bad size {size}")
            current = self._md.size
            if size > current:
                self._write(current, None, size - current)
                self._trim()
            elif size < current:
                # Like Gramine: later nodes are dropped (the host file is cut at the next
                # flush); their MHT slots dangle harmlessly until those nodes are re-created.
                data_nodes, mht_nodes = data_node_count(size), mht_node_count(size)
                for phys, node in list(self._cache.items()):
                    if node.number >= (data_nodes if node.kind == _DATA else mht_nodes):
                        del self._cache[phys]
                self._disk_data = min(self._disk_data, data_nodes)
                self._disk_mht = min(self._disk_mht, mht_nodes)
                self._md.size = size
                self._need_writing = True

    def rename(self, new_path: str, *, recovery_path: str | None = None) -> None:
        """Bind the file to `new_path` (persisted by the next flush). The caller renames the host
        file; pass the new recovery file name too if one was given at open."""
        with self._lock:
            self._check_writable()
            self._md.set_path(new_path)
            self._path = new_path
            if recovery_path is not None:
                self._recovery_path = recovery_path
            self._need_writing = True

    def flush(self) -> None:
        """Write every dirty node (fresh keys) and the metadata (fresh nonce), crash-safely,
        and fsync: when this returns, the current content is durable."""
        with self._lock:
            self._check_usable()
            if self._readonly or not self._need_writing:
                return
            try:
                self._flush()
            except BaseException as exc:
                # Nodes now carry keys that may never have reached the disk: no more use.
                self._failed = f"{type(exc).__name__}: {exc}"
                raise

    def close(self) -> None:
        """Flush, remove the (empty) recovery file and drop every decrypted node."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._failed is None:
                    self.flush()
                    self._drop_journal()
            finally:
                if self._journal_fd is not None:
                    os.close(self._journal_fd)
                    self._journal_fd = None
                self._cache.clear()
                self._root.plain = bytearray(0)
                self._md.plain = bytearray(0)
                self._closed = True

    # --- node access --------------------------------------------------------------------------

    def _what(self) -> str:
        return f"protected file '{self._path}'" if self._path else "protected file"

    def _check_usable(self) -> None:
        if self._closed:
            raise PylosError(f"{self._what()} is closed")
        if self._failed is not None:
            raise PfError(f"{self._what()}: an earlier flush failed ({self._failed}); reopen the "
                          "file (a crash-safe flush leaves the previous version on disk)", "flush")

    def _check_writable(self) -> None:
        self._check_usable()
        if self._readonly:
            raise PfError(f"{self._what()} is open read-only", "mode")

    def _read_physical(self, phys: int) -> bytes:
        if self._overlay is not None and phys in self._overlay:
            return self._overlay[phys]
        data = os.pread(self._fd, NODE_SIZE, phys * NODE_SIZE)
        self.node_reads += 1
        if len(data) != NODE_SIZE:
            raise PfError(f"{self._what()}: node {phys} is missing (the host file was "
                          "truncated)", "size")
        return data

    def _mht(self, n: int) -> _Node:
        if n == 0:
            return self._root
        phys = mht_node_physical(n)
        node = self._cache.get(phys)
        if node is not None:
            self._cache.move_to_end(phys)
            return node
        parent = self._mht(mht_parent(n))
        if n >= self._disk_mht:
            node = _Node(_MHT, n, phys, bytearray(NODE_SIZE))
        else:
            slot = child_mht_slot(n)
            plain = decrypt_node(bytes(parent.plain[slot:slot + KEY_SIZE]),
                                 self._read_physical(phys),
                                 bytes(parent.plain[slot + KEY_SIZE:slot + SLOT_SIZE]),
                                 f"{self._what()}: MHT node {n} (node {phys})",
                                 f"node {phys} MAC")
            node = _Node(_MHT, n, phys, bytearray(plain))
        self._cache[phys] = node
        return node

    def _data(self, d: int, whole: bool) -> _Node:
        phys = data_node_physical(d)
        node = self._cache.get(phys)
        if node is not None:
            self._cache.move_to_end(phys)
            return node
        parent = self._mht(d // DATA_SLOTS)
        if whole or d >= self._disk_data:  # about to be overwritten, or not on disk yet
            node = _Node(_DATA, d, phys, bytearray(NODE_SIZE))
        else:
            slot = data_slot(d)
            plain = decrypt_node(bytes(parent.plain[slot:slot + KEY_SIZE]),
                                 self._read_physical(phys),
                                 bytes(parent.plain[slot + KEY_SIZE:slot + SLOT_SIZE]),
                                 f"{self._what()}: data node {d} (node {phys})",
                                 f"node {phys} MAC")
            node = _Node(_DATA, d, phys, bytearray(plain))
        self._cache[phys] = node
        return node

    def _prefetch(self, first: int, last: int) -> dict[int, tuple[int, bytearray]]:
        """Decrypt the uncached on-disk data nodes among first..last, one read per run of
        physically consecutive nodes (a run stays under one MHT node): a short run into the
        cache, a run of `STREAM_RUN` or more only for this read, returned as {first node:
        (last node, plaintext)}."""
        streamed: dict[int, tuple[int, bytearray]] = {}
        cache = self._cache
        d = first
        last = min(last, self._disk_data - 1)
        while d <= last:
            # within a run (one MHT node's children) physical numbers are consecutive too
            physical = data_node_physical(d)
            if physical in cache:
                d += 1
                continue
            run_end = min(last, d - d % DATA_SLOTS + DATA_SLOTS - 1)
            e = d
            while e < run_end and physical + e + 1 - d not in cache:
                e += 1
            if self._overlay is None:
                plain = self._decrypt_run(d, e)
                if e - d + 1 >= STREAM_RUN:
                    streamed[d] = (e, plain)
                else:
                    for i in range(e - d + 1):
                        phys = data_node_physical(d + i)
                        self._cache[phys] = _Node(_DATA, d + i, phys,
                                                  plain[i * NODE_SIZE:(i + 1) * NODE_SIZE])
            d = e + 1
        return streamed

    def _decrypt_run(self, first: int, last: int) -> bytearray:
        """The plaintext of data nodes first..last (consecutive, under one MHT node)."""
        parent = self._mht(first // DATA_SLOTS).plain
        count = last - first + 1
        phys = data_node_physical(first)
        self.node_reads += count
        cipher = node_cipher()
        if cipher is not None:  # the run read and decrypted in one call (pylos.pf.native)
            start = data_slot(first)
            try:
                plain, bad = cipher.read(self._fd, phys * NODE_SIZE,
                                         bytes(parent[start:start + count * SLOT_SIZE]), count)
            except EOFError as short:
                raise self._missing(phys, short.args[0]) from None
        else:
            view = memoryview(bytearray(count * NODE_SIZE + MAC_SIZE))
            got = os.preadv(self._fd, [view[:count * NODE_SIZE]], phys * NODE_SIZE)
            if got != count * NODE_SIZE:
                raise self._missing(phys, got)
            plain, bad = bytearray(count * NODE_SIZE), -1
            into = memoryview(plain)
            # backwards, so each tag can follow its ciphertext over the next (done) node's start
            for i in reversed(range(count)):
                a = i * NODE_SIZE
                slot = data_slot(first + i)
                view[a + NODE_SIZE:a + NODE_SIZE + MAC_SIZE] = parent[slot + KEY_SIZE:
                                                                      slot + SLOT_SIZE]
                try:
                    AESGCM(bytes(parent[slot:slot + KEY_SIZE])).decrypt_into(
                        IV, view[a:a + NODE_SIZE + MAC_SIZE], None, into[a:a + NODE_SIZE])
                except InvalidTag:
                    bad = i
                    break
        if bad >= 0:
            raise PfError(f"{self._what()}: data node {first + bad} (node {phys + bad}): MAC "
                          "mismatch (the file was modified or corrupted)",
                          f"node {phys + bad} MAC")
        return plain

    def _missing(self, phys: int, got: int) -> PfError:
        return PfError(f"{self._what()}: node {phys + got // NODE_SIZE} is missing (the host "
                       "file was truncated)", "size")

    def _mark_dirty(self, node: _Node) -> None:
        if node.dirty:
            return
        node.dirty = True
        n = node.number // DATA_SLOTS
        while n:
            mht = self._mht(n)
            if mht.dirty:
                break  # its ancestors are dirty already
            mht.dirty = True
            n = mht_parent(n)
        self._root.dirty = True

    def _write(self, offset: int, data: memoryview | None, length: int) -> None:
        """Write `data` (zeros when None) at `offset`; the caller has filled any gap."""
        end = offset + length
        pos = offset
        if pos < MD_USER_DATA_SIZE:
            stop = min(end, MD_USER_DATA_SIZE)
            chunk = data[:stop - pos] if data is not None else bytes(stop - pos)
            self._md.plain[MD_DATA + pos:MD_DATA + stop] = chunk
            pos = stop
        while pos < end:
            rel = pos - MD_USER_DATA_SIZE
            within = rel % NODE_SIZE
            n = min(end - pos, NODE_SIZE - within)
            node = self._data(rel // NODE_SIZE, whole=n == NODE_SIZE)
            if data is not None:
                node.plain[within:within + n] = data[pos - offset:pos - offset + n]
            else:
                node.plain[within:within + n] = bytes(n)
            self._mark_dirty(node)
            pos += n
        if end > self._md.size:
            self._md.size = end
        self._need_writing = True

    def _trim(self) -> None:
        """Keep the cache within its bound: drop clean nodes, least recently used first; when
        only dirty ones are left, flush (which makes them clean) and drop those."""
        excess = len(self._cache) - self._capacity
        if excess <= 0:
            return
        clean = (phys for phys, node in self._cache.items() if not node.dirty)
        victims = list(itertools.islice(clean, excess))
        if len(victims) < excess:
            self.flush()
            victims = list(itertools.islice(self._cache, excess))
        for phys in victims:
            del self._cache[phys]

    # --- flushing -----------------------------------------------------------------------------

    def _seal(self) -> list[tuple[int, bytes | memoryview]]:
        """Encrypt every dirty node under a fresh key, bottom-up; return (physical, node)."""
        size = self._md.size
        data_nodes, mht_nodes = data_node_count(size), mht_node_count(size)
        dirty_data = [n for n in self._cache.values()
                      if n.dirty and n.kind == _DATA and n.number < data_nodes]
        dirty_mht = sorted((n for n in self._cache.values()
                            if n.dirty and n.kind == _MHT and n.number < mht_nodes),
                           key=lambda n: n.number, reverse=True)
        root = size > MD_USER_DATA_SIZE and self._root.dirty
        keys = os.urandom(KEY_SIZE * (len(dirty_data) + len(dirty_mht) + root))
        records: list[tuple[int, bytes | memoryview]] = []
        k = 0
        cipher = node_cipher()
        if cipher is not None and dirty_data:  # every data node in one call (pylos.pf.native)
            # by number: a run of siblings gets its slots in one assignment
            dirty_data.sort(key=lambda node: node.number)
            count = len(dirty_data)
            k = KEY_SIZE * count
            ciphertexts, slots = cipher.encrypt(b"".join(node.plain for node in dirty_data),
                                                keys[:k], count)
            i = 0
            while i < count:
                first = dirty_data[i].number
                j = i + 1
                stop = min(count, i + DATA_SLOTS - first % DATA_SLOTS)  # siblings only
                while j < stop and dirty_data[j].number == first + j - i:
                    j += 1
                start = data_slot(first)
                self._mht(first // DATA_SLOTS).plain[start:start + (j - i) * SLOT_SIZE] = (
                    slots[i * SLOT_SIZE:j * SLOT_SIZE])
                i = j
            sealed = memoryview(ciphertexts)
            records.extend((node.physical, sealed[i * NODE_SIZE:(i + 1) * NODE_SIZE])
                           for i, node in enumerate(dirty_data))
        else:
            for node in dirty_data:
                key = keys[k:k + KEY_SIZE]
                k += KEY_SIZE
                ciphertext, mac = encrypt_node(key, node.plain)
                parent = self._mht(node.number // DATA_SLOTS)
                slot = data_slot(node.number)
                parent.plain[slot:slot + SLOT_SIZE] = key + mac
                records.append((node.physical, ciphertext))
        for node in dirty_mht:  # children have higher numbers than their parents
            key = keys[k:k + KEY_SIZE]
            k += KEY_SIZE
            ciphertext, mac = encrypt_node(key, node.plain)
            parent = self._mht(mht_parent(node.number))
            slot = child_mht_slot(node.number)
            parent.plain[slot:slot + SLOT_SIZE] = key + mac
            records.append((node.physical, ciphertext))
        if root:
            key = keys[k:k + KEY_SIZE]
            ciphertext, mac = encrypt_node(key, self._root.plain)
            self._md.set_root(key, mac)
            records.append((1, ciphertext))
        return records

    def _flush(self) -> None:
        records = self._seal()
        metadata = self._md.seal(self._kdk, os.urandom(NONCE_SIZE))
        length = physical_size(self._md.size)
        fd = self._fd
        journal = self._journal() if self._physical > 0 else None
        if journal is not None:
            flagged = bytearray(metadata)
            flagged[HDR_FLAGS] = FLAG_HAS_PENDING_WRITE
            os.ftruncate(journal, 0)
            _pwritev_all(journal, list(itertools.chain.from_iterable(
                (_RECORD.pack(phys), node) for phys, node in [*records, (0, metadata)])), 0)
            os.fsync(journal)
            if self._disk_version == VERSION_V2:
                _pwrite_all(fd, bytes((FLAG_HAS_PENDING_WRITE,)), HDR_FLAGS)
            else:
                # v1 (or not a PF yet) has no flag byte: set one by writing the new node's first
                # sector, a write disks do atomically. The rest of node 0 is garbage until the
                # in-place step, but with the flag set an open replays the journal anyway.
                _pwrite_all(fd, flagged[:512], 0)
            self._disk_version = VERSION_V2
            os.fsync(fd)
            metadata_in_place = bytes(flagged)
        else:
            metadata_in_place = metadata
        _write_nodes(fd, records)
        if length < self._physical:
            os.ftruncate(fd, length)
        _pwrite_all(fd, metadata_in_place, 0)
        os.fsync(fd)
        if journal is not None:
            _pwrite_all(fd, b"\0", HDR_FLAGS)
            os.fsync(fd)  # the cleared flag must be durable before the journal is reused
            os.ftruncate(journal, 0)
        self.node_writes += len(records) + 1
        self._physical = length
        self._disk_version = VERSION_V2
        self._disk_data = data_node_count(self._md.size)
        self._disk_mht = mht_node_count(self._md.size)
        for node in self._cache.values():
            node.dirty = False
        self._root.dirty = False
        self._need_writing = False

    def _journal(self) -> int | None:
        """The fd of this file's recovery file (created on first use); None for an unlinked
        host file, whose crash safety no longer matters."""
        name = self._recovery_path
        if name is None:
            host = host_path_of(self._fd)
            if host is None:
                return None
            name = host + JOURNAL_SUFFIX
        if name != self._journal_name:
            self._drop_journal()
            try:
                self._journal_fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise PfError(f"{self._what()}: cannot create its recovery file '{name}': "
                              f"{exc.strerror}", "recovery") from None
            self._journal_name = name
            _fsync_dir(name)  # the journal must exist after a crash once the flag is set
        return self._journal_fd

    def _drop_journal(self) -> None:
        if self._journal_fd is None or self._journal_name is None:
            return
        os.close(self._journal_fd)
        self._journal_fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._journal_name)
        self._journal_name = None
