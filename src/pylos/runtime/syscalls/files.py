"""The open family, emulated: the supervisor opens the file itself inside the enclave's view
and injects the descriptor (ADDFD|SEND). The program's memory is read once, validated with
NOTIF_ID_VALID, and our own copy of the path is what gets opened and judged — a racing thread
rewriting the path cannot change what was checked (no check-then-CONTINUE).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import re
import stat
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pylos.runtime.policy import PolicyError
from pylos.runtime.target import (
    RESOLVE_BENEATH,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    namespace_pid,
    openat2,
    read_path,
)

if TYPE_CHECKING:
    from pylos.runtime.seccomp import Notification
    from pylos.runtime.supervisor import Supervisor

AT_FDCWD = -100
O_PATH = os.O_PATH
OPEN_HOW = struct.Struct("<QQQ")
# /proc/self/fd/N, /dev/fd/N, /dev/stdin...: reopening one of the program's own descriptors.
FD_PATH = re.compile(rb"^/(?:proc/(\d+)(?:/task/\d+)?/fd|dev/fd)/(\d+)$")
STD_STREAMS = {b"/dev/stdin": 0, b"/dev/stdout": 1, b"/dev/stderr": 2}
# The status flags F_SETFL sets (O_ASYNC left out: open ignores it, F_SETFL would not).
SETFL_FLAGS = os.O_APPEND | os.O_DIRECT | os.O_NOATIME | os.O_NONBLOCK
# Dropped when reopening an O_PATH probe through /proc/self/fd/N: the probe resolved the path.
REOPEN_DROPS = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _int32(value: int) -> int:
    """An `int` syscall argument: the low 32 bits, sign-extended (AT_FDCWD = 0xffffff9c)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _umask(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _rewrite_proc_self(pid: int, path: bytes) -> bytes:
    """`/proc/self` in the view means the program, not the supervisor reading for it."""
    head, _, rest = path[len(b"/proc/"):].partition(b"/")
    if path.startswith(b"/proc/") and head in (b"self", b"thread-self"):
        ns_pid = str(namespace_pid(pid)).encode()
        base = b"/proc/" + ns_pid
        if head == b"thread-self":
            base += b"/task/" + str(namespace_pid(pid, b"NSpid:")).encode()
        return base + (b"/" + rest if rest else b"")
    return path


def _open_in_view(sup: Supervisor, pid: int, dirfd: int, path: bytes, flags: int, mode: int,
                  resolve: int, nid: int | None = None) -> int:
    """Open `path` as the program would, confined to the view (no magic links, no escape).

    A relative path starts at the caller's cwd or dirfd, found through /proc/<tid>: with the
    notification `nid`, that directory is only used once NOTIF_ID_VALID says the TID still
    is the caller (a reused TID would name another process's directory, maybe on the host).
    """
    flags |= os.O_CLOEXEC  # our copy; the program's O_CLOEXEC goes to ADDFD
    resolve |= RESOLVE_NO_MAGICLINKS
    if path.startswith(b"/"):
        return openat2(sup.root_fd, path, flags, mode, resolve | RESOLVE_IN_ROOT)
    link = f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}"
    try:
        base = os.open(link, O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(errno.EBADF if dirfd != AT_FDCWD else exc.errno, "bad dirfd") from None
    try:
        if nid is not None and not sup.listener.id_valid(nid):
            raise OSError(errno.ESRCH, "the caller is gone")
        try:
            return openat2(base, path, flags, mode, resolve | RESOLVE_BENEATH)
        except OSError as exc:
            if exc.errno != errno.EXDEV or resolve & RESOLVE_BENEATH:
                raise
        # `..` or an absolute symlink leaves the start directory: resolve from the root,
        # by the start directory's path in the view, if it still names the same directory.
        prefix = os.readlink(link).encode()
        full = prefix.rstrip(b"/") + b"/" + path
        check = openat2(sup.root_fd, prefix, O_PATH, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        try:
            a, b = os.fstat(check), os.fstat(base)
            if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
                raise OSError(errno.EAGAIN, "start directory moved")
        finally:
            os.close(check)
        return openat2(sup.root_fd, full, flags, mode, resolve | RESOLVE_IN_ROOT)
    finally:
        os.close(base)


def _reopen_own_fd(pid: int, number: int,
                   flags: int) -> tuple[int, os.stat_result, bool, bool]:
    """open("/proc/self/fd/N"): a new open file description of the program's fd N.

    Returns (fd, stat, pending) as `_open_without_blocking` does, and within_rights: whether
    the program already holds fd N with at least the access asked for, so that no policy
    decision is needed (an O_PATH fd grants none).
    """
    try:
        with open(f"/proc/{pid}/fdinfo/{number}", "rb") as info:
            held = next(int(line.split()[1], 8) for line in info if line.startswith(b"flags:"))
        fd, st, pending = _open_without_blocking(
            lambda how: os.open(f"/proc/{pid}/fd/{number}", how | os.O_CLOEXEC), flags)
    except (FileNotFoundError, StopIteration):
        raise OSError(errno.ENOENT, "no such fd") from None
    wanted, have = flags & os.O_ACCMODE, held & os.O_ACCMODE
    within = not held & O_PATH and (wanted == have or have == os.O_RDWR)
    return fd, st, pending, within


def _waits(flags: int) -> bool:
    """Whether a native open with `flags` may wait for a FIFO's other end (O_RDWR never does)."""
    return not flags & (os.O_NONBLOCK | O_PATH) and flags & os.O_ACCMODE != os.O_RDWR


@functools.cache
@functools.cache
def _own_fds() -> int:
    """The supervisor's /proc/self/fd (O_PATH, opened once): reopening by number through it
    resolves one component."""
    return os.open("/proc/self/fd", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _open_without_blocking(opener: Callable[[int], int],
                           flags: int) -> tuple[int, os.stat_result, bool]:
    """`opener(flags)`, without ever waiting: the supervisor's loop must not block.

    A FIFO's open waits for the other end, which another process of the enclave opens through
    us too: done here, it would deadlock the enclave. Returns (fd, its stat, pending): pending
    when fd is an O_PATH descriptor of a FIFO whose real open the caller finishes off the
    loop once it has admitted it (`_finish_blocking_open`); otherwise fd is opened as asked.

    - Read side: resolved O_PATH first, reopened unless a FIFO. An O_NONBLOCK open would
      connect as a reader at once: a writer waiting in its open would go ahead, and could even
      leave before our real open, which would then wait for a writer that already came.
    - Write side: opened O_NONBLOCK, which fails with ENXIO, connecting nothing, when no
      reader is there (then resolved O_PATH); with a reader it connects as the real open
      would, and the O_NONBLOCK is taken off again.
    """
    if not _waits(flags):
        fd = opener(flags)
        return fd, os.fstat(fd), False
    exclusive = flags & (os.O_CREAT | os.O_EXCL) == os.O_CREAT | os.O_EXCL
    if flags & os.O_ACCMODE == os.O_RDONLY and not exclusive:
        try:
            probe = opener(O_PATH | (flags & (os.O_NOFOLLOW | os.O_DIRECTORY)))
        except FileNotFoundError:
            if not flags & os.O_CREAT:
                raise
        else:
            st = os.fstat(probe)
            if stat.S_ISFIFO(st.st_mode):
                return probe, st, True
            try:  # the same inode, so the same stat
                return os.open(str(probe), (flags & ~REOPEN_DROPS) | os.O_CLOEXEC,
                               dir_fd=_own_fds()), st, False
            finally:
                os.close(probe)
    try:  # the write side, or a creating open (a race could put a FIFO there)
        fd = opener(flags | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        probe = opener(O_PATH | (flags & (os.O_NOFOLLOW | os.O_DIRECTORY)))
        st = os.fstat(probe)
        if not stat.S_ISFIFO(st.st_mode):
            os.close(probe)
            raise
        return probe, st, True
    # F_SETFL sets exactly these: the program's own, without the O_NONBLOCK added above
    # (status flags belong to the open file description the program gets).
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & SETFL_FLAGS)
    return fd, os.fstat(fd), False


def _finish_blocking_open(sup: Supervisor, n: Notification, fd: int, flags: int,
                          name: str) -> None:
    """The real open of an admitted FIFO (`fd`: O_PATH), in a thread that answers once the
    other end shows up. Takes ownership of `fd`. The caller waits killably
    (WAIT_KILLABLE_RECV); a thread whose partner never comes ends with the supervisor."""

    def finish() -> None:
        try:
            reopened = os.open(f"/proc/self/fd/{fd}", (flags & ~REOPEN_DROPS) | os.O_CLOEXEC)
        except OSError as exc:
            sup.listener.reply(n.id, error=exc.errno or errno.EIO)
            return
        finally:
            os.close(fd)
        try:
            sup.listener.reply_fd(n.id, reopened, cloexec=bool(flags & os.O_CLOEXEC))
        finally:
            os.close(reopened)
        sup.trace(n, f'"{name}", {flags:#o}', "fd (FIFO)")

    threading.Thread(target=finish, name=f"pylos-fifo-{n.id}", daemon=True).start()


WRITE_INTENT = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _open_judged_by_path(sup: Supervisor, pid: int, dirfd: int, path: bytes, flags: int,
                         mode: int, resolve: int, nid: int) -> int:
    """Identity mode (no view, runtime/identity.py): an open that may write is judged on the
    resolved host path *before* it can change anything, then exactly what was judged is
    opened (the probe reopened, or the new name created beneath the judged directory)."""
    policy = sup.policy.identity
    name = path.decode(errors="replace")
    try:
        probe = _open_in_view(sup, pid, dirfd, path, O_PATH | (flags & os.O_NOFOLLOW), 0,
                              resolve, nid)
    except FileNotFoundError:
        if not flags & os.O_CREAT:
            raise
        head, _, leaf = path.rpartition(b"/")
        if leaf in (b"", b".", b".."):
            raise
        parent = _open_in_view(sup, pid, dirfd, head or (b"/" if path.startswith(b"/") else b"."),
                               O_PATH | os.O_DIRECTORY, 0, resolve, nid)
        try:
            where = os.readlink(f"/proc/self/fd/{parent}")
            if not policy.allows(where.rstrip("/") + "/" + os.fsdecode(leaf)):
                raise PolicyError(errno.EACCES, f"Disallowing creating file '{name}'; file is "
                                  "not trusted or allowed.") from None
            beneath = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | (
                0 if policy.allows_below(where) else RESOLVE_NO_SYMLINKS)
            return openat2(parent, leaf, flags | os.O_CLOEXEC, mode, beneath)
        finally:
            os.close(parent)
    try:
        if flags & os.O_CREAT and flags & os.O_EXCL:
            raise FileExistsError(errno.EEXIST, "exists")
        st = os.fstat(probe)
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            if sup.policy.trusted.lookup(st, probe) is not None:
                raise PolicyError(errno.EACCES, f"Disallowing write/append to a trusted file "
                                  f"'{name}'")
            if not policy.allows(os.readlink(f"/proc/self/fd/{probe}")):
                raise PolicyError(errno.EACCES, f"Disallowing access to file '{name}'; file is "
                                  "not allowed.")
        # Devices, FIFOs and sockets write nothing to the host's file system.
        return os.open(str(probe), (flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW))
                       | os.O_CLOEXEC, dir_fd=_own_fds())
    finally:
        os.close(probe)


def emulate_open(sup: Supervisor, n: Notification, dirfd: int, path_ptr: int, flags: int,
                 mode: int, resolve: int = 0) -> None:
    pid = n.pid
    try:
        path = read_path(pid, path_ptr)
    except OSError as exc:
        if sup.listener.id_valid(n.id):
            sup.listener.reply(n.id, error=exc.errno or errno.EFAULT)
        return
    if not sup.listener.id_valid(n.id):
        return  # the caller is gone or was interrupted: its memory meant nothing
    name = path.decode(errors="replace")
    fd = -1
    try:
        if flags & os.O_CREAT:
            mode &= ~_umask(pid)
        path = _rewrite_proc_self(pid, path)
        own_fd = STD_STREAMS.get(path)
        match = FD_PATH.match(path)
        if match and match.group(1) is not None and int(match.group(1)) != namespace_pid(pid):
            raise PolicyError(errno.EACCES, f"Disallowing access to file '{name}': another "
                              "process's descriptor")
        within_rights = False
        if own_fd is not None or match:
            fd, st, pending, within_rights = _reopen_own_fd(
                pid, own_fd if own_fd is not None else int(match.group(2)),
                flags & ~(os.O_CREAT | os.O_EXCL | os.O_CLOEXEC))
        else:
            judge_first = sup.policy.identity is not None
            fd, st, pending = _open_without_blocking(
                lambda how: (_open_judged_by_path if judge_first and how & WRITE_INTENT
                             else _open_in_view)(sup, pid, dirfd, path, how & ~os.O_CLOEXEC,
                                                 mode, resolve, n.id), flags)
        served = fd if within_rights else sup.policy.admit(fd, st, name, flags)
        if served != fd:
            # A verified copy: a fresh open file description each time (own offset).
            os.close(fd)
            fd = os.open(str(served), os.O_RDONLY | os.O_CLOEXEC, dir_fd=_own_fds())
        elif pending:
            _finish_blocking_open(sup, n, fd, flags, name)
            fd = -1  # the thread owns it now
            return
        sup.listener.reply_fd(n.id, fd, cloexec=bool(flags & os.O_CLOEXEC))
        sup.trace(n, f'"{name}", {flags:#o}', f"fd (inode {st.st_ino})")
    except PolicyError as exc:
        sup.log(exc.level, str(exc))
        sup.listener.reply(n.id, error=exc.errno)
        sup.trace(n, f'"{name}", {flags:#o}', f"-{errno.errorcode.get(exc.errno, exc.errno)}")
    except OSError as exc:
        err = _explain_failure(sup, pid, dirfd, path, name, flags, exc.errno or errno.EIO)
        sup.listener.reply(n.id, error=err)
        sup.trace(n, f'"{name}", {flags:#o}', f"-{errno.errorcode.get(err, err)}")
    finally:
        if fd >= 0:
            os.close(fd)


def _explain_failure(sup: Supervisor, pid: int, dirfd: int, path: bytes, name: str, flags: int,
                     err: int) -> int:
    """Read-only mounts say EROFS; Gramine says EACCES, with a log line saying why."""
    if err != errno.EROFS:
        return err
    try:
        fd = _open_in_view(sup, pid, dirfd, path, O_PATH, 0, 0)
    except OSError:
        sup.log("error", f"Disallowing creating file '{name}'; file is not trusted or allowed.")
        return errno.EACCES
    try:
        if sup.policy.trusted.lookup(os.fstat(fd)) is not None:
            sup.log("error", f"Disallowing write/append to a trusted file '{name}'")
        else:
            sup.log("error", f"Disallowing access to file '{name}'; file is not allowed.")
    finally:
        os.close(fd)
    return errno.EACCES


def handle_open(sup: Supervisor, n: Notification) -> None:
    emulate_open(sup, n, AT_FDCWD, n.args[0], _int32(n.args[1]), n.args[2] & 0o7777)


def handle_creat(sup: Supervisor, n: Notification) -> None:
    emulate_open(sup, n, AT_FDCWD, n.args[0], os.O_CREAT | os.O_WRONLY | os.O_TRUNC,
                 n.args[1] & 0o7777)


def handle_openat(sup: Supervisor, n: Notification) -> None:
    emulate_open(sup, n, _int32(n.args[0]), n.args[1], _int32(n.args[2]), n.args[3] & 0o7777)


def handle_openat2(sup: Supervisor, n: Notification) -> None:
    size = n.args[3]
    if size < OPEN_HOW.size:
        sup.listener.reply(n.id, error=errno.EINVAL)
        return
    try:
        with open(f"/proc/{n.pid}/mem", "rb", buffering=0) as mem:
            mem.seek(n.args[2])
            raw = mem.read(OPEN_HOW.size)
    except OSError:
        raw = b""
    if not sup.listener.id_valid(n.id):
        return
    if len(raw) != OPEN_HOW.size:
        sup.listener.reply(n.id, error=errno.EFAULT)
        return
    flags, mode, resolve = OPEN_HOW.unpack(raw)
    # The program's own RESOLVE_IN_ROOT would make its dirfd the root: honour it by resolving
    # beneath that directory instead (never wider than the view).
    emulate_open(sup, n, _int32(n.args[0]), n.args[1], flags, mode,
                 (resolve & ~RESOLVE_IN_ROOT) | (RESOLVE_BENEATH if resolve & RESOLVE_IN_ROOT
                                                 else 0))
