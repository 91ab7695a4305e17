"""The FUSE kernel protocol, served by the supervisor on a `/dev/fuse` descriptor.

The enclave's init opens `/dev/fuse` inside the enclave's user namespace and mounts it
(`mount -t fuse -o fd=N,...`); the descriptor reaches the supervisor over the launch channel
(SCM_RIGHTS), which answers the kernel's requests here, in a thread per mount. No libfuse:
no mount helper (fusermount) is needed, the mount already exists, and the protocol subset a
file system needs is small (`/usr/include/linux/fuse.h`, protocol 7.31).

The server keeps the node table (node ID <-> path inside the mount, lookup counts) and turns
requests into calls on a `Driver`, which knows only paths and file handles. A driver raises
`OSError(errno)` to fail a request; anything else is logged and answered with EIO.
"""

from __future__ import annotations

import _thread  # threading's lock, without threading's import (`pylos run` start-up)
import errno
import os
import stat
import struct
import time
from collections.abc import Callable

from pylos.typing_compat import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import threading

# Opcodes (enum fuse_opcode).
LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK = 1, 2, 3, 4, 5, 6
MKNOD, MKDIR, UNLINK, RMDIR, RENAME = 8, 9, 10, 11, 12
OPEN, READ, WRITE, STATFS, RELEASE, FSYNC, FLUSH, INIT = 14, 15, 16, 17, 18, 20, 25, 26
OPENDIR, READDIR, RELEASEDIR, FSYNCDIR, ACCESS, CREATE, INTERRUPT = 27, 28, 29, 30, 34, 35, 36
DESTROY, BATCH_FORGET, RENAME2 = 38, 42, 45

# INIT flags.
ASYNC_READ = 1 << 0
BIG_WRITES = 1 << 5
WRITEBACK_CACHE = 1 << 16
PARALLEL_DIROPS = 1 << 18
MAX_PAGES = 1 << 22
CACHE_SYMLINKS = 1 << 23
# open_out flags.
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_CACHE_DIR = 1 << 3
# setattr_in.valid bits.
FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE = 1, 2, 4, 8
FATTR_ATIME, FATTR_MTIME, FATTR_FH, FATTR_ATIME_NOW, FATTR_MTIME_NOW = 16, 32, 64, 128, 256
GETATTR_FH = 1
FSYNC_FDATASYNC = 1
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2

PROTOCOL = (7, 31)
MAX_WRITE = 1 << 20
MAX_PAGES_COUNT = MAX_WRITE // 4096
IN_HEADER = struct.Struct("<IIQQIIIHH")
OUT_HEADER = struct.Struct("<IiQ")
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
ENTRY_OUT = struct.Struct("<QQQQII")
ATTR_OUT = struct.Struct("<QII")
INIT_IN = struct.Struct("<IIII")
INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")
GETATTR_IN = struct.Struct("<IIQ")
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")
OPEN_IN = struct.Struct("<II")
OPEN_OUT = struct.Struct("<QII")
CREATE_IN = struct.Struct("<IIII")
MKDIR_IN = struct.Struct("<II")
MKNOD_IN = struct.Struct("<IIII")  # mode, rdev, umask, padding
READ_IN = struct.Struct("<QQII")
WRITE_IN = struct.Struct("<QQII")
WRITE_IN_SIZE = 40
WRITE_OUT = struct.Struct("<II")
RELEASE_IN = struct.Struct("<QII")
FSYNC_IN = struct.Struct("<QII")
RENAME_IN = struct.Struct("<Q")
RENAME2_IN = struct.Struct("<QII")
FORGET_IN = struct.Struct("<Q")
BATCH_FORGET_IN = struct.Struct("<II")
FORGET_ONE = struct.Struct("<QQ")
STATFS_OUT = struct.Struct("<QQQQQIIII24x")
DIRENT = struct.Struct("<QQII")
ROOT_ID = 1


class Attr(NamedTuple):
    """What a driver says about a file (ino and times are optional)."""

    mode: int
    size: int = 0
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    atime_ns: int = 0


class Context(NamedTuple):
    """Who asks: the caller's ids and thread ID in the mount's namespaces (0: outside)."""

    uid: int
    gid: int
    pid: int


class Driver:
    """One file system type behind a FUSE mount (Gramine: one driver per mount type).

    Paths are relative to the mount's root ("" is the root). `attr_timeout` is how long the
    kernel may cache names and attributes (seconds), `negative_timeout` how long it may
    remember that a name does not exist (0: ask each time); `opendir_flags` go with every
    directory open. A driver whose `open` fails with ENOSYS gets no open, flush or release
    at all (the kernel stops asking): its reads come by node (`read_node`), not by handle.
    """

    attr_timeout: float = 0.0
    negative_timeout: float = 0.0
    init_flags: int = 0
    opendir_flags: int = 0
    no_open: bool = False

    def getattr(self, ctx: Context, path: str, fh: int | None) -> Attr:
        raise OSError(errno.ENOSYS, "getattr")

    def listdir(self, ctx: Context, path: str) -> list[tuple[str, int]]:
        """(name, mode) of each entry; "." and ".." are added by the server."""
        raise OSError(errno.ENOTDIR, "listdir")

    def open(self, ctx: Context, path: str, flags: int) -> tuple[int, int]:
        """(file handle, FOPEN_* flags)."""
        raise OSError(errno.EACCES, "open")

    def create(self, ctx: Context, path: str, flags: int, mode: int) -> tuple[int, int]:
        raise OSError(errno.EACCES, "create")

    def read(self, ctx: Context, fh: int, offset: int, size: int
             ) -> bytes | list[bytes | memoryview]:
        """The bytes, or the buffers that make them up (written out with one writev)."""
        raise OSError(errno.EBADF, "read")

    def read_node(self, ctx: Context, path: str, offset: int, size: int) -> bytes:
        """A read of a driver without opens (`no_open`)."""
        raise OSError(errno.EBADF, "read")

    def write(self, ctx: Context, fh: int, offset: int, data: bytes) -> int:
        raise OSError(errno.EBADF, "write")

    def flush(self, ctx: Context, fh: int) -> None:
        pass

    def fsync(self, ctx: Context, fh: int, datasync: bool) -> None:
        pass

    def release(self, ctx: Context, fh: int) -> None:
        pass

    def setattr(self, ctx: Context, path: str, fh: int | None, *, size: int | None,
                mode: int | None, times: tuple[int | None, int | None] | None = None) -> None:
        """`times`: (atime, mtime) in ns to set, None for one to keep (None: neither)."""
        raise OSError(errno.EPERM, "setattr")

    def mkdir(self, ctx: Context, path: str, mode: int) -> None:
        raise OSError(errno.EPERM, "mkdir")

    def mknod(self, ctx: Context, path: str, mode: int) -> None:
        """A node that is not a regular file or directory (sockets bound there, FIFOs)."""
        raise OSError(errno.EPERM, "mknod")

    def symlink(self, ctx: Context, path: str, target: bytes) -> None:
        raise OSError(errno.EPERM, "symlink")

    def readlink(self, ctx: Context, path: str) -> bytes:
        raise OSError(errno.EINVAL, "readlink")

    def unlink(self, ctx: Context, path: str) -> None:
        raise OSError(errno.EPERM, "unlink")

    def rmdir(self, ctx: Context, path: str) -> None:
        raise OSError(errno.EPERM, "rmdir")

    def rename(self, ctx: Context, old: str, new: str, noreplace: bool) -> None:
        raise OSError(errno.EPERM, "rename")

    def statfs(self, ctx: Context) -> tuple[int, int, int, int, int, int, int]:
        """(blocks, bfree, bavail, files, ffree, bsize, namelen)."""
        return (0, 0, 0, 0, 0, 4096, 255)

    def destroy(self) -> None:
        """The mount is gone (or the enclave ended): release everything, flushing."""


# What a request handler answers: the reply's bytes, or the buffers that make it up.
Reply = bytes | list[bytes | memoryview]


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class FuseServer:
    """Serves one mounted `/dev/fuse` descriptor with a driver, until the mount goes away."""

    def __init__(self, fd: int, driver: Driver, log: Callable[[str, str], None],
                 name: str) -> None:
        self.fd = fd
        self.driver = driver
        self.log = log
        self.name = name  # the mount point, for log lines
        self.paths: dict[int, str] = {ROOT_ID: ""}
        # Open handles by node: fstat of an unlinked open file comes without its handle.
        self.open_handles: dict[int, set[int]] = {}
        self.nodes: dict[str, int] = {"": ROOT_ID}
        self.lookups: dict[int, int] = {}
        self.next_node = ROOT_ID + 1
        self.dirs: dict[int, list[tuple[int, str, int]]] = {}
        self.next_dir = 1
        self.lock = _thread.allocate_lock()  # held per request: the driver is single-threaded
        self.thread: threading.Thread | None = None
        self.timeout = driver.attr_timeout
        self.handlers: dict[int, Callable[[Context, int, memoryview], Reply | None]] = {
            INIT: self._init, LOOKUP: self._lookup, FORGET: self._forget,
            BATCH_FORGET: self._batch_forget, GETATTR: self._getattr, SETATTR: self._setattr,
            OPEN: self._open, CREATE: self._create, READ: self._read, WRITE: self._write,
            FLUSH: self._flush, RELEASE: self._release, FSYNC: self._fsync,
            OPENDIR: self._opendir, READDIR: self._readdir, RELEASEDIR: self._releasedir,
            FSYNCDIR: lambda _c, _n, _a: b"", MKDIR: self._mkdir, UNLINK: self._unlink,
            RMDIR: self._rmdir, RENAME: self._rename, RENAME2: self._rename2,
            MKNOD: self._mknod, SYMLINK: self._symlink, READLINK: self._readlink,
            STATFS: self._statfs, INTERRUPT: lambda _c, _n, _a: None,
            DESTROY: lambda _c, _n, _a: b"",
        }

    # --- the loop -------------------------------------------------------------------------

    def start(self) -> None:
        import threading  # here: most servers are processes and never start a thread

        self.thread = threading.Thread(target=self.serve, name=f"fuse:{self.name}", daemon=True)
        self.thread.start()

    def serve(self) -> None:
        buffer = bytearray(MAX_WRITE + 64 * 1024)
        view = memoryview(buffer)
        try:
            while True:
                try:
                    length = os.readv(self.fd, [buffer])
                except OSError as exc:
                    if exc.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                        continue  # ENOENT: the request was interrupted before we read it
                    if exc.errno == errno.ENODEV:
                        return  # unmounted: the enclave's mount namespace is gone
                    raise
                self._one(view[:length])
        except OSError as exc:
            if exc.errno not in (errno.EBADF, errno.ENODEV):
                self.log("error", f"FUSE server for {self.name} stopped: {exc}")
        finally:
            with self.lock:
                self.driver.destroy()

    def _one(self, request: memoryview) -> None:
        _, opcode, unique, nodeid, uid, gid, pid, _, _ = IN_HEADER.unpack_from(request)
        ctx = Context(uid, gid, pid)
        handler = self.handlers.get(opcode)
        error, reply = 0, []
        if handler is None:
            error = errno.ENOSYS
        else:
            try:
                with self.lock:
                    result = handler(ctx, nodeid, request[IN_HEADER.size:])
                if result is None:
                    return  # FORGET, INTERRUPT: no reply
                reply = result if isinstance(result, list) else [result]
            except OSError as exc:
                error = exc.errno or errno.EIO
            except Exception as exc:  # a driver bug must not stop the file system
                self.log("error", f"internal error in {self.name} (FUSE opcode {opcode}): "
                         f"{exc!r}")
                error = errno.EIO
        header = OUT_HEADER.pack(OUT_HEADER.size + sum(map(len, reply)), -error, unique)
        try:
            os.writev(self.fd, [header, *reply])
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # ENOENT: the caller was interrupted meanwhile
                raise

    # --- nodes ----------------------------------------------------------------------------

    def _path(self, nodeid: int) -> str:
        try:
            return self.paths[nodeid]
        except KeyError:
            raise OSError(errno.ESTALE, "unknown node") from None

    def _attr(self, nodeid: int, attr: Attr) -> bytes:
        blocks = (attr.size + 511) // 512
        return ATTR.pack(nodeid, attr.size, blocks, attr.atime_ns // 10**9,
                         attr.mtime_ns // 10**9, attr.ctime_ns // 10**9,
                         attr.atime_ns % 10**9, attr.mtime_ns % 10**9, attr.ctime_ns % 10**9,
                         attr.mode, attr.nlink, attr.uid, attr.gid, 0, 4096, 0)

    def _valid(self) -> tuple[int, int]:
        return int(self.timeout), int((self.timeout % 1) * 10**9)

    def _entry(self, path: str, attr: Attr) -> bytes:
        nodeid = self.nodes.get(path)
        if nodeid is None:
            nodeid = self.next_node
            self.next_node += 1
            self.nodes[path], self.paths[nodeid] = nodeid, path
        self.lookups[nodeid] = self.lookups.get(nodeid, 0) + 1
        seconds, nanos = self._valid()
        return ENTRY_OUT.pack(nodeid, 0, seconds, seconds, nanos, nanos) + self._attr(nodeid,
                                                                                    attr)

    def _drop(self, nodeid: int, count: int) -> None:
        left = self.lookups.get(nodeid, 0) - count
        if left > 0:
            self.lookups[nodeid] = left
            return
        self.lookups.pop(nodeid, None)
        path = self.paths.pop(nodeid, None)
        if path is not None and self.nodes.get(path) == nodeid:
            del self.nodes[path]

    def _moved(self, old: str, new: str) -> None:
        """Renamed: `old` and everything below it now live under `new`."""
        victim = self.nodes.pop(new, None)
        if victim is not None:
            self.paths[victim] = f"\0deleted:{victim}"  # open handles keep working by fh
        prefix = old + "/"
        for path, nodeid in list(self.nodes.items()):
            if path == old or path.startswith(prefix):
                moved = new + path[len(old):]
                del self.nodes[path]
                self.nodes[moved], self.paths[nodeid] = nodeid, moved

    def _gone(self, path: str) -> None:
        nodeid = self.nodes.pop(path, None)
        if nodeid is not None:
            self.paths[nodeid] = f"\0deleted:{nodeid}"

    @staticmethod
    def _name(args: memoryview) -> str:
        return bytes(args).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")

    # --- requests -------------------------------------------------------------------------

    def _init(self, _ctx: Context, _nodeid: int, args: memoryview) -> bytes:
        major, minor, _, offered = INIT_IN.unpack_from(args)
        if major != PROTOCOL[0]:
            raise OSError(errno.EPROTO, f"FUSE protocol {major}.{minor}")
        wanted = ASYNC_READ | BIG_WRITES | MAX_PAGES | PARALLEL_DIROPS | self.driver.init_flags
        return INIT_OUT.pack(PROTOCOL[0], min(minor, PROTOCOL[1]), MAX_WRITE, wanted & offered,
                             64, 48, MAX_WRITE, 1, MAX_PAGES_COUNT, 0, 0)

    def _lookup(self, ctx: Context, nodeid: int, args: memoryview) -> bytes:
        path = _join(self._path(nodeid), self._name(args))
        try:
            attr = self.driver.getattr(ctx, path, None)
        except OSError as exc:
            if exc.errno != errno.ENOENT or not self.driver.negative_timeout:
                raise
            # Node 0: the kernel remembers the name as missing for that long.
            timeout = self.driver.negative_timeout
            seconds, nanos = int(timeout), int((timeout % 1) * 10**9)
            return ENTRY_OUT.pack(0, 0, seconds, 0, nanos, 0) + bytes(ATTR.size)
        return self._entry(path, attr)

    def _forget(self, _ctx: Context, nodeid: int, args: memoryview) -> None:
        self._drop(nodeid, FORGET_IN.unpack_from(args)[0])

    def _batch_forget(self, _ctx: Context, _nodeid: int, args: memoryview) -> None:
        count, _ = BATCH_FORGET_IN.unpack_from(args)
        for index in range(count):
            node, lookups = FORGET_ONE.unpack_from(args, BATCH_FORGET_IN.size + 16 * index)
            self._drop(node, lookups)

    def _getattr(self, ctx: Context, nodeid: int, args: memoryview) -> bytes:
        flags, _, fh = GETATTR_IN.unpack_from(args)
        path = self._path(nodeid)
        handles = self.open_handles.get(nodeid)
        if not flags & GETATTR_FH and handles and path.startswith("\0"):
            flags, fh = GETATTR_FH, next(iter(handles))  # deleted: only a handle reaches it
        attr = self.driver.getattr(ctx, path, fh if flags & GETATTR_FH else None)
        seconds, nanos = self._valid()
        return ATTR_OUT.pack(seconds, nanos, 0) + self._attr(nodeid, attr)

    def _setattr(self, ctx: Context, nodeid: int, args: memoryview) -> bytes:
        fields = SETATTR_IN.unpack_from(args)
        valid, fh, size, mode = fields[0], fields[2], fields[3], fields[11]
        if valid & (FATTR_UID | FATTR_GID):
            raise OSError(errno.EPERM, "chown")
        path = self._path(nodeid)
        times = None
        if valid & (FATTR_ATIME | FATTR_MTIME):
            now = time.time_ns()
            atime, mtime = (fields[5] * 10**9 + fields[8], fields[6] * 10**9 + fields[9])
            times = (None if not valid & FATTR_ATIME else now if valid & FATTR_ATIME_NOW
                     else atime,
                     None if not valid & FATTR_MTIME else now if valid & FATTR_MTIME_NOW
                     else mtime)
        self.driver.setattr(ctx, path, fh if valid & FATTR_FH else None,
                            size=size if valid & FATTR_SIZE else None,
                            mode=mode if valid & FATTR_MODE else None, times=times)
        return self._getattr(ctx, nodeid, memoryview(GETATTR_IN.pack(
            GETATTR_FH if valid & FATTR_FH else 0, 0, fh)))

    def _open(self, ctx: Context, nodeid: int, args: memoryview) -> bytes:
        flags, _ = OPEN_IN.unpack_from(args)
        fh, open_flags = self.driver.open(ctx, self._path(nodeid), flags)
        self.open_handles.setdefault(nodeid, set()).add(fh)
        return OPEN_OUT.pack(fh, open_flags, 0)

    def _create(self, ctx: Context, nodeid: int, args: memoryview) -> bytes:
        flags, mode, umask, _ = CREATE_IN.unpack_from(args)
        path = _join(self._path(nodeid), self._name(args[CREATE_IN.size:]))
        fh, open_flags = self.driver.create(ctx, path, flags, mode & ~umask)
        try:
            entry = self._entry(path, self.driver.getattr(ctx, path, fh))
        except OSError:
            self.driver.release(ctx, fh)
            raise
        self.open_handles.setdefault(self.nodes[path], set()).add(fh)
        return entry + OPEN_OUT.pack(fh, open_flags, 0)

    def _read(self, ctx: Context, nodeid: int, args: memoryview) -> Reply:
        fh, offset, size, _ = READ_IN.unpack_from(args)
        if self.driver.no_open:
            return self.driver.read_node(ctx, self._path(nodeid), offset, size)
        return self.driver.read(ctx, fh, offset, size)

    def _write(self, ctx: Context, _nodeid: int, args: memoryview) -> bytes:
        fh, offset, size, _ = WRITE_IN.unpack_from(args)
        data = args[WRITE_IN_SIZE:WRITE_IN_SIZE + size]
        return WRITE_OUT.pack(self.driver.write(ctx, fh, offset, bytes(data)), 0)

    def _flush(self, ctx: Context, _nodeid: int, args: memoryview) -> bytes:
        if self.driver.no_open:
            raise OSError(errno.ENOSYS, "flush")  # and the kernel sends no more
        self.driver.flush(ctx, struct.unpack_from("<Q", args)[0])
        return b""

    def _release(self, ctx: Context, nodeid: int, args: memoryview) -> bytes:
        fh = RELEASE_IN.unpack_from(args)[0]
        handles = self.open_handles.get(nodeid)
        if handles is not None:
            handles.discard(fh)
            if not handles:
                del self.open_handles[nodeid]
        self.driver.release(ctx, fh)
        return b""

    def _fsync(self, ctx: Context, _nodeid: int, args: memoryview) -> bytes:
        fh, flags, _ = FSYNC_IN.unpack_from(args)
        self.driver.fsync(ctx, fh, bool(flags & FSYNC_FDATASYNC))
        return b""

    def _opendir(self, ctx: Context, nodeid: int, _args: memoryview) -> bytes:
        path = self._path(nodeid)
        entries = [(nodeid, ".", stat.S_IFDIR), (ROOT_ID, "..", stat.S_IFDIR)]
        for name, mode in self.driver.listdir(ctx, path):
            entries.append((self.nodes.get(_join(path, name), 0xFFFFFFFF), name, mode))
        handle = self.next_dir
        self.next_dir += 1
        self.dirs[handle] = entries
        return OPEN_OUT.pack(handle, self.driver.opendir_flags, 0)

    def _readdir(self, _ctx: Context, _nodeid: int, args: memoryview) -> bytes:
        fh, offset, size, _ = READ_IN.unpack_from(args)
        out = bytearray()
        entries = self.dirs.get(fh, [])
        for index in range(offset, len(entries)):
            ino, name, mode = entries[index]
            raw = name.encode("utf-8", "surrogateescape")
            record = DIRENT.pack(ino, index + 1, len(raw), stat.S_IFMT(mode) >> 12) + raw
            record += bytes(-len(record) % 8)
            if len(out) + len(record) > size:
                break
            out += record
        return bytes(out)

    def _releasedir(self, _ctx: Context, _nodeid: int, args: memoryview) -> bytes:
        self.dirs.pop(RELEASE_IN.unpack_from(args)[0], None)
        return b""

    def _mkdir(self, ctx: Context, nodeid: int, args: memoryview) -> bytes:
        mode, umask = MKDIR_IN.unpack_from(args)
        path = _join(self._path(nodeid), self._name(args[MKDIR_IN.size:]))
        self.driver.mkdir(ctx, path, mode & ~umask & 0o7777)
        return self._entry(path, self.driver.getattr(ctx, path, None))

    def _mknod(self, ctx: Context, nodeid: int, args: memoryview) -> bytes:
        mode, _rdev, umask, _ = MKNOD_IN.unpack_from(args)
        path = _join(self._path(nodeid), self._name(args[MKNOD_IN.size:]))
        self.driver.mknod(ctx, path, mode & ~(umask & 0o777))
        return self._entry(path, self.driver.getattr(ctx, path, None))

    def _symlink(self, ctx: Context, nodeid: int, args: memoryview) -> bytes:
        name, target = bytes(args).split(b"\0")[:2]  # the new name, then what it points to
        path = _join(self._path(nodeid), name.decode("utf-8", "surrogateescape"))
        self.driver.symlink(ctx, path, target)
        return self._entry(path, self.driver.getattr(ctx, path, None))

    def _readlink(self, ctx: Context, nodeid: int, _args: memoryview) -> bytes:
        return self.driver.readlink(ctx, self._path(nodeid))

    def _unlink(self, ctx: Context, nodeid: int, args: memoryview) -> bytes:
        path = _join(self._path(nodeid), self._name(args))
        self.driver.unlink(ctx, path)
        self._gone(path)
        return b""

    def _rmdir(self, ctx: Context, nodeid: int, args: memoryview) -> bytes:
        path = _join(self._path(nodeid), self._name(args))
        self.driver.rmdir(ctx, path)
        self._gone(path)
        return b""

    def _rename_common(self, ctx: Context, nodeid: int, newdir: int, names: memoryview,
                       flags: int) -> bytes:
        if flags & RENAME_EXCHANGE or flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise OSError(errno.EINVAL, "rename flags")
        old_name, new_name = bytes(names).split(b"\0")[:2]
        old = _join(self._path(nodeid), old_name.decode("utf-8", "surrogateescape"))
        new = _join(self._path(newdir), new_name.decode("utf-8", "surrogateescape"))
        self.driver.rename(ctx, old, new, bool(flags & RENAME_NOREPLACE))
        self._moved(old, new)
        return b""

    def _rename(self, ctx: Context, nodeid: int, args: memoryview) -> bytes:
        (newdir,) = RENAME_IN.unpack_from(args)
        return self._rename_common(ctx, nodeid, newdir, args[RENAME_IN.size:], 0)

    def _rename2(self, ctx: Context, nodeid: int, args: memoryview) -> bytes:
        newdir, flags, _ = RENAME2_IN.unpack_from(args)
        return self._rename_common(ctx, nodeid, newdir, args[RENAME2_IN.size:], flags)

    def _statfs(self, ctx: Context, _nodeid: int, _args: memoryview) -> bytes:
        blocks, bfree, bavail, files, ffree, bsize, namelen = self.driver.statfs(ctx)
        return STATFS_OUT.pack(blocks, bfree, bavail, files, ffree, bsize, namelen, bsize, 0)
