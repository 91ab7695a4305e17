"""`type = "encrypted"` mounts: Gramine protected files seen by the program as plaintext.

The host directory (or single file) at the mount's `uri` holds protected files only; the
supervisor decrypts and encrypts them in its own memory (`pylos.pf`), which no path names, and
serves the plaintext through FUSE. One `ProtectedFile` per host file (by inode) is shared by
every open of it, in every process: the kernel sends all reads and writes here, so processes
and descriptors see each other's writes, and its page cache makes repeated reads cheap.

Flushes (new node keys, crash-safe journal) happen on fsync/fdatasync, on the last close of a
file and when the enclave ends. Each file is bound to the host path Gramine would bind it to:
the mount's `uri` path as written (normalized, relative stays relative) plus the path inside.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pylos.hashing import write_atomic
from pylos.pf import (
    GRAMINE_RECOVERY_SUFFIX,
    JOURNAL_SUFFIX,
    PfError,
    ProtectedFile,
    normalize_path,
    plaintext_size,
)
from pylos.runtime.fs.fuse import FOPEN_KEEP_CACHE, WRITEBACK_CACHE, Attr, Context, Driver
from pylos.runtime.keys import KeyStore

NEW_PREFIX = ".pylos-new-"  # a file being created: complete before it gets its name
HIDDEN_SUFFIXES = (JOURNAL_SUFFIX, GRAMINE_RECOVERY_SUFFIX)
# In the mount's host root while a non-empty directory is renamed: [old, new] (JSON). Present
# at the next start, it means a crash in the middle: the rename is finished then.
RENAME_JOURNAL = ".pylos-rename"


def hidden(name: str) -> bool:
    """Host entries that belong to pylos, not to the program (journals, files in creation)."""
    return name.startswith(NEW_PREFIX) or name.endswith(HIDDEN_SUFFIXES) or (
        name == RENAME_JOURNAL)


@dataclass
class OpenFile:
    fd: int
    pf: ProtectedFile
    readonly: bool
    refs: int = 0


LISTED_TYPES = (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFSOCK, stat.S_IFIFO)


class EncryptedFs(Driver):
    """A directory (or one file) of protected files under one key."""

    attr_timeout = 3600.0  # only this driver changes these files while the enclave runs
    init_flags = WRITEBACK_CACHE

    def __init__(self, host: str, bound: str, key_name: str, keys: KeyStore, recovery: bool,
                 log: Callable[[str, str], None], mount_path: str) -> None:
        self.host_root = host
        self.bound_root = bound
        self.single_file = not os.path.isdir(host)
        if self.single_file:
            # With the writeback cache the kernel never takes a regular file's size from us
            # after creating its inode, and a file-rooted mount's inode is created empty.
            self.init_flags = 0
        self.key_name = key_name
        self.keys = keys
        self.recovery = recovery
        self.log = log
        self.mount_path = mount_path
        self.files: dict[tuple[int, int], OpenFile] = {}  # by host (device, inode)
        self.handles: dict[int, OpenFile] = {}
        self.next_handle = 1
        self.sizes: dict[tuple[int, int, int, int], int] = {}  # plaintext sizes by host stat
        # An interrupted directory rename is finished first (a file-rooted mount has none).
        self.renames_checked = self.single_file

    # --- names and keys -------------------------------------------------------------------

    def host(self, path: str) -> str:
        return f"{self.host_root}/{path}" if path else self.host_root

    def bound(self, path: str) -> str:
        return normalize_path(f"{self.bound_root}/{path}") if path else self.bound_root

    def view(self, path: str) -> str:
        return f"{self.mount_path.rstrip('/')}/{path}" if path else self.mount_path

    def recovery_path(self, path: str) -> str | None:
        return self.host(path) + GRAMINE_RECOVERY_SUFFIX if self.recovery else None

    def key(self) -> bytes:
        key = self.keys.get(self.key_name)
        if key is None:
            self.log("error", f"key '{self.key_name}' is not set (encrypted mount "
                     f"{self.mount_path})")
            raise OSError(errno.EACCES, "key not set")
        if not self.renames_checked:
            self.renames_checked = True
            self._finish_interrupted_rename(key)
        return key

    def _refuse(self, path: str, exc: PfError) -> OSError:
        self.log("error", f"pf_open failed for '{self.view(path)}' ({exc.check}): {exc}")
        return OSError(errno.EACCES, str(exc))

    def _check_name(self, path: str) -> None:
        if hidden(os.path.basename(path)):
            raise OSError(errno.EACCES, "reserved name")

    # --- metadata -------------------------------------------------------------------------

    def _open_by_stat(self, st: os.stat_result) -> OpenFile | None:
        return self.files.get((st.st_dev, st.st_ino))

    def getattr(self, ctx: Context, path: str, fh: int | None) -> Attr:
        if fh is not None and fh in self.handles:
            opened = self.handles[fh]
            return self._attr(os.fstat(opened.fd), opened.pf.size)
        if path.startswith("\0"):
            raise OSError(errno.ENOENT, "deleted")
        self._check_name(path)
        try:
            st = os.lstat(self.host(path))
        except FileNotFoundError:
            if self.single_file and not path:
                return Attr(stat.S_IFREG | 0o644)  # created on first write
            raise
        if stat.S_ISDIR(st.st_mode):
            return self._attr(st, st.st_size)
        if stat.S_ISLNK(st.st_mode):
            return self._attr(st, len(os.readlink(self.host(path))))
        if stat.S_ISSOCK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            return self._attr(st, 0)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.ENOENT, "not a protected file")
        opened = self._open_by_stat(st)
        if opened is not None:
            return self._attr(st, opened.pf.size)
        return self._attr(st, self._plaintext_size(path, st))

    def _plaintext_size(self, path: str, st: os.stat_result) -> int:
        """From the metadata node alone; cached by the host file's identity and change time."""
        cache_key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        size = self.sizes.get(cache_key)
        if size is not None:
            return size
        key = self.key()
        fd = os.open(self.host(path), os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = plaintext_size(fd, key, self.bound(path),
                                  recovery_path=self.recovery_path(path))
        except PfError as exc:
            raise self._refuse(path, exc) from None
        finally:
            os.close(fd)
        self.sizes[cache_key] = size
        return size

    @staticmethod
    def _attr(st: os.stat_result, size: int) -> Attr:
        return Attr(st.st_mode, size, st.st_nlink, st.st_uid, st.st_gid, st.st_mtime_ns,
                    st.st_ctime_ns, st.st_atime_ns)

    def listdir(self, ctx: Context, path: str) -> list[tuple[str, int]]:
        entries = []
        with os.scandir(self.host(path)) as scan:
            for entry in scan:
                if hidden(entry.name):
                    continue
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_IFMT(mode) in LISTED_TYPES:
                    entries.append((entry.name, mode))
        return entries

    def statfs(self, ctx: Context) -> tuple[int, int, int, int, int, int, int]:
        where = self.host_root if not self.single_file else os.path.dirname(self.host_root)
        st = os.statvfs(where)
        return (st.f_blocks, st.f_bfree, st.f_bavail, st.f_files, st.f_ffree, st.f_frsize,
                st.f_namemax)

    # --- files ----------------------------------------------------------------------------

    def _acquire(self, path: str) -> OpenFile:
        """The shared open file of `path` (opened now if nobody has it open); refs + 1."""
        key = self.key()
        host = self.host(path)
        st = os.stat(host)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EACCES, path)
        opened = self._open_by_stat(st)
        if opened is None:
            readonly = False
            try:
                fd = os.open(host, os.O_RDWR | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                    raise
                fd = os.open(host, os.O_RDONLY | os.O_CLOEXEC)
                readonly = True
            try:
                pf = ProtectedFile.open(fd, key, self.bound(path), readonly=readonly,
                                        recovery_path=self.recovery_path(path))
            except PfError as exc:
                os.close(fd)
                raise self._refuse(path, exc) from None
            except BaseException:
                os.close(fd)
                raise
            opened = OpenFile(fd, pf, readonly)
            self.files[(st.st_dev, st.st_ino)] = opened
        opened.refs += 1
        return opened

    def _release_file(self, opened: OpenFile) -> None:
        opened.refs -= 1
        if opened.refs > 0:
            return
        for ident, candidate in list(self.files.items()):
            if candidate is opened:
                del self.files[ident]
        try:
            opened.pf.close()  # flushes
        except PfError as exc:
            self.log("error", f"flushing encrypted file failed ({exc.check}): {exc}")
        finally:
            os.close(opened.fd)

    def _handle(self, opened: OpenFile) -> int:
        handle = self.next_handle
        self.next_handle += 1
        self.handles[handle] = opened
        return handle

    def open(self, ctx: Context, path: str, flags: int) -> tuple[int, int]:
        self._check_name(path)
        if self.single_file and not path and not os.path.exists(self.host_root):
            self._create_file(path, 0o644, exclusive=False)
        opened = self._acquire(path)
        if opened.readonly and flags & os.O_ACCMODE != os.O_RDONLY:
            self._release_file(opened)
            raise OSError(errno.EACCES, "read-only host file")
        return self._handle(opened), FOPEN_KEEP_CACHE

    def create(self, ctx: Context, path: str, flags: int, mode: int) -> tuple[int, int]:
        self._check_name(path)
        if self.single_file:
            raise OSError(errno.EACCES, "a single-file mount has no directory entries")
        if os.path.lexists(self.host(path)):
            if flags & os.O_EXCL:
                raise OSError(errno.EEXIST, path)
        else:
            self._create_file(path, mode, exclusive=bool(flags & os.O_EXCL))
        return self.open(ctx, path, flags)

    def _create_file(self, path: str, mode: int, exclusive: bool) -> None:
        """An empty protected file at `path`, complete before its name appears (a crash never
        leaves an empty or half-initialised host file under the program's name)."""
        key = self.key()
        host = self.host(path)
        temp = os.path.join(os.path.dirname(host), f"{NEW_PREFIX}{os.urandom(8).hex()}")
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     (mode & 0o777) | 0o600)
        try:
            ProtectedFile.open(fd, key, self.bound(path), create=True,
                               recovery_path=self.recovery_path(path)).close()
            try:
                os.link(temp, host)
            except FileExistsError:
                if exclusive:
                    raise
        finally:
            os.close(fd)
            os.unlink(temp)
        _fsync_dir(os.path.dirname(host))

    def read(self, ctx: Context, fh: int, offset: int, size: int) -> list[bytes | memoryview]:
        opened = self._by_handle(fh)
        try:
            return opened.pf.read_buffers(offset, size)
        except PfError as exc:
            self.log("error", f"encrypted file read failed ({exc.check}): {exc}")
            raise OSError(errno.EIO, str(exc)) from None

    def write(self, ctx: Context, fh: int, offset: int, data: bytes) -> int:
        opened = self._by_handle(fh)
        if opened.readonly:
            raise OSError(errno.EBADF, "read-only")
        try:
            return opened.pf.write(offset, data)
        except PfError as exc:
            self.log("error", f"encrypted file write failed ({exc.check}): {exc}")
            raise OSError(errno.EIO, str(exc)) from None

    def fsync(self, ctx: Context, fh: int, datasync: bool) -> None:
        opened = self._by_handle(fh)
        try:
            opened.pf.flush()
        except PfError as exc:
            self.log("error", f"encrypted file flush failed ({exc.check}): {exc}")
            raise OSError(errno.EIO, str(exc)) from None

    def release(self, ctx: Context, fh: int) -> None:
        opened = self.handles.pop(fh, None)
        if opened is not None:
            self._release_file(opened)

    def _by_handle(self, fh: int) -> OpenFile:
        try:
            return self.handles[fh]
        except KeyError:
            raise OSError(errno.EBADF, "unknown handle") from None

    def setattr(self, ctx: Context, path: str, fh: int | None, *, size: int | None,
                mode: int | None, times: tuple[int | None, int | None] | None = None) -> None:
        if mode is not None and not path.startswith("\0"):
            # The program's mode, kept as the host file's (the server, root of the enclave's
            # user namespace, reads and writes whatever the mode says).
            os.chmod(self.host(path), stat.S_IMODE(mode))
        if times is not None:  # times are the host file's too (names and times are not secret)
            target: int | str = (self.handles[fh].fd if fh is not None and fh in self.handles
                                 else self.host(path))
            current = os.stat(target, follow_symlinks=False) if isinstance(target, str) else (
                os.fstat(target))
            os.utime(target, ns=(current.st_atime_ns if times[0] is None else times[0],
                                 current.st_mtime_ns if times[1] is None else times[1]),
                     **({"follow_symlinks": False} if isinstance(target, str) else {}))
        if size is None:
            return
        if fh is not None and fh in self.handles:
            opened = self.handles[fh]
            opened.refs += 1
        else:
            opened = self._acquire(path)
        try:
            if opened.readonly:
                raise OSError(errno.EACCES, "read-only host file")
            opened.pf.truncate(size)
        except PfError as exc:
            raise OSError(errno.EIO, str(exc)) from None
        finally:
            self._release_file(opened)

    # --- directories ----------------------------------------------------------------------

    def mkdir(self, ctx: Context, path: str, mode: int) -> None:
        self._check_name(path)
        os.mkdir(self.host(path), mode | 0o700)

    def mknod(self, ctx: Context, path: str, mode: int) -> None:
        """A UNIX socket bound here, or a FIFO: a node of that type on the host (the kernel
        keeps the socket or pipe itself; nothing of its data reaches the host)."""
        self._check_name(path)
        if not (stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode)):
            raise OSError(errno.EPERM, "only sockets and FIFOs in an encrypted mount")
        os.mknod(self.host(path), stat.S_IFMT(mode) | (stat.S_IMODE(mode) & 0o777))

    def symlink(self, ctx: Context, path: str, target: bytes) -> None:
        # Names are plaintext on the host, as in Gramine's protected files: so is a link's
        # target. The kernel resolves it in the enclave's view, never on the host.
        self._check_name(path)
        os.symlink(target, self.host(path))

    def readlink(self, ctx: Context, path: str) -> bytes:
        return os.readlink(os.fsencode(self.host(path)))

    def unlink(self, ctx: Context, path: str) -> None:
        self._check_name(path)
        host = self.host(path)
        os.unlink(host)
        self._remove_journals(host)

    @staticmethod
    def _remove_journals(host: str) -> None:
        for suffix in HIDDEN_SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(host + suffix)

    def rmdir(self, ctx: Context, path: str) -> None:
        host = self.host(path)
        leftovers = [name for name in os.listdir(host) if hidden(name)]
        if len(leftovers) != len(os.listdir(host)):
            raise OSError(errno.ENOTEMPTY, path)
        for name in leftovers:  # journals of deleted files, creations a crash interrupted
            os.unlink(os.path.join(host, name))
        os.rmdir(host)

    def rename(self, ctx: Context, old: str, new: str, noreplace: bool) -> None:
        self._check_name(old)
        self._check_name(new)
        host_old, host_new = self.host(old), self.host(new)
        st = os.lstat(host_old)
        if noreplace and os.path.lexists(host_new):
            raise OSError(errno.EEXIST, new)
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            os.rename(host_old, host_new)  # a link, socket or FIFO: no content bound to a path
            return
        if stat.S_ISDIR(st.st_mode):
            if any(files for _, _, files in os.walk(host_old)):
                self._rename_tree(old, new)
            else:
                os.rename(host_old, host_new)
            return
        opened = self._acquire(old)
        try:
            opened.pf.rename(self.bound(new), recovery_path=self.recovery_path(new))
            opened.pf.flush()
            os.rename(host_old, host_new)
        except PfError as exc:
            raise OSError(errno.EIO, str(exc)) from None
        finally:
            self._release_file(opened)
        self._remove_journals(host_old)

    def _rename_tree(self, old: str, new: str) -> None:
        """Rename a non-empty directory. Every protected file below is bound to its path, so
        each is rebound (its metadata node rewritten). Crash-safe: the journal names the
        rename before anything changes, the directory is renamed in one step, then the files
        are rebound; a journal found at the next start (`key`) finishes the rebinding."""
        key = self.key()
        journal = os.path.join(self.host_root, RENAME_JOURNAL)
        write_atomic(Path(journal), json.dumps([old, new]).encode(), mode=0o600)
        _fsync_dir(self.host_root)
        os.rename(self.host(old), self.host(new))
        for directory in {os.path.dirname(self.host(old)), os.path.dirname(self.host(new))}:
            _fsync_dir(directory)
        self._rebind_tree(old, new, key)
        os.unlink(journal)
        _fsync_dir(self.host_root)

    def _rebind_tree(self, old: str, new: str, key: bytes) -> None:
        for directory, _, names in os.walk(self.host(new)):
            for name in names:
                host = os.path.join(directory, name)
                if hidden(name) or not stat.S_ISREG(os.lstat(host).st_mode):
                    continue
                path = os.path.relpath(host, self.host_root)
                self._rebind(path, old + path[len(new):], key)

    def _rebind(self, path: str, was: str, key: bytes) -> None:
        """Bind the file now at `path` to it (it was bound to `was`, or already is)."""
        opened = self.files.get(_identity(os.lstat(self.host(path))))
        try:
            if opened is not None:  # open in the enclave: its shared ProtectedFile
                opened.pf.rename(self.bound(path), recovery_path=self.recovery_path(path))
                opened.pf.flush()
                return
            fd = os.open(self.host(path), os.O_RDWR | os.O_CLOEXEC)
            try:
                for bound in (self.bound(was), self.bound(path)):
                    try:
                        pf = ProtectedFile.open(fd, key, bound,
                                                recovery_path=self.recovery_path(path))
                    except PfError:
                        continue  # bound to the other name (a rename resumed after a crash)
                    with pf:
                        if bound != self.bound(path):
                            pf.rename(self.bound(path), recovery_path=self.recovery_path(path))
                    return
                self.log("error", f"renaming '{self.view(was)}': it is no protected file of "
                         "this mount's key; left as it is")
            finally:
                os.close(fd)
        except PfError as exc:
            raise OSError(errno.EIO, str(exc)) from None

    def _finish_interrupted_rename(self, key: bytes) -> None:
        journal = os.path.join(self.host_root, RENAME_JOURNAL)
        try:
            with open(journal, "rb") as f:
                old, new = json.loads(f.read())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self.log("error", f"encrypted mount {self.mount_path}: unreadable rename journal "
                     f"({exc}); removed")
            old = new = None
        if isinstance(old, str) and isinstance(new, str) and not os.path.lexists(
                self.host(old)) and os.path.isdir(self.host(new)):
            self.log("warning", f"encrypted mount {self.mount_path}: finishing the rename of "
                     f"'{self.view(old)}' to '{self.view(new)}' a crash interrupted")
            self._rebind_tree(old, new, key)
        os.unlink(journal)
        _fsync_dir(self.host_root)

    def destroy(self) -> None:
        """The enclave ended: flush and close every file still open (each exactly once)."""
        still_open = {id(o): o for o in [*self.handles.values(), *self.files.values()]}
        self.handles.clear()
        for opened in still_open.values():
            opened.refs = 1
            self._release_file(opened)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
