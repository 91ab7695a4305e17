"""The open family, emulated: the supervisor opens the file itself inside the enclave's view
and injects the descriptor (ADDFD|SEND). The program's memory is read once, validated with
NOTIF_ID_VALID, and our own copy of the path is what gets opened and judged — a racing thread
rewriting the path cannot change what was checked (no check-then-CONTINUE).
"""

from __future__ import annotations

import errno
import os
import re
import struct
from typing import TYPE_CHECKING

from pylos.runtime.policy import PolicyError
from pylos.runtime.target import (
    RESOLVE_BENEATH,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
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
                  resolve: int) -> int:
    """Open `path` as the program would, confined to the view (no magic links, no escape)."""
    flags |= os.O_CLOEXEC  # our copy; the program's O_CLOEXEC goes to ADDFD
    resolve |= RESOLVE_NO_MAGICLINKS
    if path.startswith(b"/"):
        return openat2(sup.root(pid), path, flags, mode, resolve | RESOLVE_IN_ROOT)
    link = f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}"
    try:
        base = os.open(link, O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(errno.EBADF if dirfd != AT_FDCWD else exc.errno, "bad dirfd") from None
    try:
        try:
            return openat2(base, path, flags, mode, resolve | RESOLVE_BENEATH)
        except OSError as exc:
            if exc.errno != errno.EXDEV or resolve & RESOLVE_BENEATH:
                raise
        # `..` or an absolute symlink leaves the start directory: resolve from the root,
        # by the start directory's path in the view, if it still names the same directory.
        prefix = os.readlink(link).encode()
        full = prefix.rstrip(b"/") + b"/" + path
        check = openat2(sup.root(pid), prefix, O_PATH, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        try:
            a, b = os.fstat(check), os.fstat(base)
            if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
                raise OSError(errno.EAGAIN, "start directory moved")
        finally:
            os.close(check)
        return openat2(sup.root(pid), full, flags, mode, resolve | RESOLVE_IN_ROOT)
    finally:
        os.close(base)


def _reopen_own_fd(pid: int, number: int, flags: int) -> tuple[int, bool]:
    """open("/proc/self/fd/N"): a new open file description of the program's fd N.

    Returns (fd, within_rights): within_rights when the program already holds fd N with at
    least the access asked for, so no policy decision is needed (an O_PATH fd grants none).
    """
    try:
        with open(f"/proc/{pid}/fdinfo/{number}", "rb") as info:
            held = next(int(line.split()[1], 8) for line in info if line.startswith(b"flags:"))
        fd = os.open(f"/proc/{pid}/fd/{number}", flags | os.O_CLOEXEC)
    except (FileNotFoundError, StopIteration):
        raise OSError(errno.ENOENT, "no such fd") from None
    wanted, have = flags & os.O_ACCMODE, held & os.O_ACCMODE
    within = not held & O_PATH and (wanted == have or have == os.O_RDWR)
    return fd, within


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
            fd, within_rights = _reopen_own_fd(
                pid, own_fd if own_fd is not None else int(match.group(2)),
                flags & ~(os.O_CREAT | os.O_EXCL | os.O_CLOEXEC))
        else:
            fd = _open_in_view(sup, pid, dirfd, path, flags & ~os.O_CLOEXEC, mode, resolve)
        st = os.fstat(fd)
        served = fd if within_rights else sup.policy.admit(fd, st, name, flags)
        if served != fd:
            # A verified copy: a fresh open file description each time (own offset).
            os.close(fd)
            fd = os.open(f"/proc/self/fd/{served}", os.O_RDONLY | os.O_CLOEXEC)
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
