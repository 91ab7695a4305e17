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
from collections.abc import Callable

from pylos.runtime.fs.procfs import mount_table, sanitized_copy
from pylos.runtime.identity import foreign_process_entry
from pylos.runtime.policy import PolicyError
from pylos.runtime.target import (
    RESOLVE_BENEATH,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    USER_ADDRESS_LIMIT,
    namespace_pid,
    openat2,
    read_chunks,
    read_memory,
    read_path,
    thread_group,
)
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from pylos.runtime.seccomp import Notification
    from pylos.runtime.supervisor import Supervisor

AT_FDCWD = -100
O_PATH = os.O_PATH
OPEN_HOW = struct.Struct("<QQQ")
OPEN_HOW_MAX = 4096  # openat2's size limit (PAGE_SIZE): E2BIG beyond
# Linux's open flags (x86_64, VALID_OPEN_FLAGS in include/linux/fcntl.h). O_LARGEFILE is 0 in
# Python's os (glibc defines it away on 64-bit), not in the kernel; __O_TMPFILE is O_TMPFILE
# without its O_DIRECTORY.
O_LARGEFILE = 0o100000
O_TMPFILE_BIT = os.O_TMPFILE & ~os.O_DIRECTORY
VALID_OPEN_FLAGS = (os.O_ACCMODE | os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_TRUNC
                    | os.O_APPEND | os.O_NONBLOCK | os.O_DSYNC | os.O_SYNC | os.O_ASYNC
                    | os.O_DIRECT | O_LARGEFILE | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NOATIME
                    | os.O_CLOEXEC | O_PATH | O_TMPFILE_BIT)
O_PATH_FLAGS = os.O_DIRECTORY | os.O_NOFOLLOW | O_PATH | os.O_CLOEXEC
RESOLVE_NO_XDEV = 0x01
RESOLVE_CACHED = 0x20
VALID_RESOLVE_FLAGS = (RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS
                       | RESOLVE_BENEATH | RESOLVE_IN_ROOT | RESOLVE_CACHED)
S_IALLUGO = 0o7777
# Never created by a trapped open: as host root, a set-uid file made through an allowed
# directory would be a set-uid root program on the host.
SET_ID_BITS = stat.S_ISUID | stat.S_ISGID
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


def _will_create(flags: int) -> bool:
    return bool(flags & (os.O_CREAT | O_TMPFILE_BIT))


def legacy_open_how(flags: int, mode: int) -> tuple[int, int]:
    """open(2)/openat(2)/creat(2)'s arguments as the kernel takes them (build_open_how):
    `flags` is an int whose unknown bits are ignored, `mode` a umode_t kept only by a call
    that may create; O_PATH keeps only the flags it honours."""
    flags = _int32(flags) & VALID_OPEN_FLAGS
    if flags & O_PATH:
        flags &= O_PATH_FLAGS
    return flags, mode & S_IALLUGO if _will_create(flags) else 0


def check_open_how(flags: int, mode: int, resolve: int, strict: bool) -> None:
    """Raise OSError as the kernel's build_open_flags would, before any path is read.

    `strict`: openat2(2), where unknown bits in any field are EINVAL instead of ignored.
    """
    flags &= ~os.O_CLOEXEC
    if strict:
        if flags & ~VALID_OPEN_FLAGS or resolve & ~VALID_RESOLVE_FLAGS:
            raise OSError(errno.EINVAL, "unknown open flags or resolve flags")
        if resolve & RESOLVE_BENEATH and resolve & RESOLVE_IN_ROOT:
            raise OSError(errno.EINVAL, "RESOLVE_BENEATH with RESOLVE_IN_ROOT")
        if (mode & ~S_IALLUGO) if _will_create(flags) else mode:
            raise OSError(errno.EINVAL, "mode without O_CREAT/O_TMPFILE, or beyond 07777")
    if flags & (os.O_DIRECTORY | os.O_CREAT) == os.O_DIRECTORY | os.O_CREAT:
        raise OSError(errno.EINVAL, "O_DIRECTORY with O_CREAT")
    if flags & O_TMPFILE_BIT and (not flags & os.O_DIRECTORY
                                  or flags & os.O_ACCMODE == os.O_RDONLY):
        raise OSError(errno.EINVAL, "O_TMPFILE without O_DIRECTORY or write access")
    if flags & O_PATH and flags & ~O_PATH_FLAGS:
        raise OSError(errno.EINVAL, "O_PATH with flags it does not take")
    if resolve & RESOLVE_CACHED and flags & (os.O_TRUNC | os.O_CREAT | O_TMPFILE_BIT):
        raise OSError(errno.EAGAIN, "RESOLVE_CACHED cannot create or truncate")


def _umask(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    return 0o022


# procfs's own links into /proc/self (`mounts -> self/mounts`, `net -> self/net`): resolved
# by the supervisor they would name its process, which the enclave's /proc does not show.
PROC_SELF_LINKS = (b"mounts", b"net")


def _rewrite_proc_self(pid: int, path: bytes) -> bytes:
    """`/proc/self` in the view means the program, not the supervisor reading for it."""
    head, _, rest = path[len(b"/proc/"):].partition(b"/")
    if path.startswith(b"/proc/") and head in PROC_SELF_LINKS:
        head, rest = b"self", head + (b"/" + rest if rest else b"")
    if path.startswith(b"/proc/") and head in (b"self", b"thread-self"):
        ns_pid = str(namespace_pid(pid)).encode()
        base = b"/proc/" + ns_pid
        if head == b"thread-self":
            base += b"/task/" + str(namespace_pid(pid, b"NSpid:")).encode()
        return base + (b"/" + rest if rest else b"")
    return path


# Open flags by name, for --trace (O_RDONLY is the absence of the access bits).
FLAG_NAMES = tuple((value, name) for name, value in (
    ("O_WRONLY", os.O_WRONLY), ("O_RDWR", os.O_RDWR), ("O_CREAT", os.O_CREAT),
    ("O_EXCL", os.O_EXCL), ("O_NOCTTY", os.O_NOCTTY), ("O_TRUNC", os.O_TRUNC),
    ("O_APPEND", os.O_APPEND), ("O_NONBLOCK", os.O_NONBLOCK), ("O_SYNC", os.O_SYNC),
    ("O_DSYNC", os.O_DSYNC), ("O_ASYNC", os.O_ASYNC), ("O_DIRECT", os.O_DIRECT),
    ("O_LARGEFILE", O_LARGEFILE), ("O_DIRECTORY", os.O_DIRECTORY),
    ("O_NOFOLLOW", os.O_NOFOLLOW), ("O_NOATIME", os.O_NOATIME), ("O_CLOEXEC", os.O_CLOEXEC),
    ("O_PATH", O_PATH), ("O_TMPFILE", O_TMPFILE_BIT)))


def open_flags_text(flags: int) -> str:
    """`O_RDONLY|O_CLOEXEC`, as strace writes open flags."""
    names = [] if flags & os.O_ACCMODE else ["O_RDONLY"]
    known = 0
    for value, name in FLAG_NAMES:
        if flags & value == value and value:
            names.append(name)
            known |= value
    if flags & ~known & ~os.O_ACCMODE or flags & os.O_ACCMODE == os.O_ACCMODE:
        names.append(f"{flags & ~known:#o}")
    return "|".join(names)


def reply_unreadable(sup: Supervisor, n: Notification, exc: OSError) -> None:
    """The call's arguments in the program's memory could not be read: its errno (EFAULT),
    unless the caller is gone, when nobody is there to answer."""
    if sup.listener.id_valid(n.id):
        sup.listener.reply(n.id, error=exc.errno or errno.EFAULT)


def _open_in_view(sup: Supervisor, pid: int, dirfd: int, path: bytes, flags: int, mode: int,
                  resolve: int, nid: int | None = None) -> int:
    """Open `path` as the program would, confined to the view (no magic links, no escape).

    A relative path starts at the caller's cwd or dirfd, found through /proc/<tid>: with the
    notification `nid`, that directory is only used once NOTIF_ID_VALID says the TID still
    is the caller (a reused TID would name another process's directory, maybe on the host).
    The program's own RESOLVE_BENEATH and RESOLVE_IN_ROOT (openat2) scope the lookup to that
    directory, absolute paths included, as the kernel does: never wider than the view.
    """
    flags |= os.O_CLOEXEC  # our copy; the program's O_CLOEXEC goes to ADDFD
    resolve |= RESOLVE_NO_MAGICLINKS
    absolute = path.startswith(b"/")
    if absolute and resolve & RESOLVE_BENEATH:
        raise OSError(errno.EXDEV, "absolute path with RESOLVE_BENEATH")
    if absolute and not resolve & RESOLVE_IN_ROOT:
        return openat2(sup.root_fd, path, flags, mode, resolve | RESOLVE_IN_ROOT)
    link = f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}"
    try:
        base = os.open(link, O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(errno.EBADF if dirfd != AT_FDCWD else exc.errno, "bad dirfd") from None
    try:
        if nid is not None and not sup.listener.id_valid(nid):
            raise OSError(errno.ESRCH, "the caller is gone")
        if resolve & RESOLVE_IN_ROOT:  # the start directory is the root: nothing leaves it
            return openat2(base, path, flags, mode, resolve)
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


def _open_in_view_or_by_host_link(sup: Supervisor, pid: int, dirfd: int, path: bytes,
                                  flags: int, mode: int, resolve: int, nid: int) -> int:
    """`_open_in_view`, and Gramine's answer for a host symlink whose target the view lacks.

    Debian's alternatives are absolute links out of the mounted directory
    (`/usr/lib/x86_64-linux-gnu/libblas.so.3` -> `/etc/alternatives/...` -> `.../blas/...`).
    In the view they dangle unless /etc/alternatives is mounted too; Gramine follows them by
    the host path when the file they end at is itself trusted. So does this: for a read
    whose last component is such a link, the host resolves the link, and the file it ends at
    is opened only if the manifest trusts that very path (it is then verified as any
    trusted file). Anything else keeps the view's ENOENT."""
    if flags & WRITE_INTENT and not flags & os.O_TRUNC and sup.policy.trusted.union is not None:
        _verify_copy_up_of(sup, pid, dirfd, path, flags, resolve, nid)
    try:
        return _open_in_view(sup, pid, dirfd, path, flags, mode, resolve, nid)
    except OSError as exc:
        if exc.errno != errno.ENOENT or flags & WRITE_INTENT or resolve & ~RESOLVE_NO_MAGICLINKS:
            raise
        target = _trusted_target_of_host_link(sup, pid, dirfd, path, nid)
        if target is None:
            raise
        return os.open(target, (flags & (O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY))
                       | os.O_RDONLY | os.O_CLOEXEC)


def _verify_copy_up_of(sup: Supervisor, pid: int, dirfd: int, path: bytes, flags: int,
                       resolve: int, nid: int) -> None:
    """A write to a union root's file below copies it up: verified first (syscalls/union.py)."""
    from pylos.runtime.syscalls.union import verify_copy_up

    try:
        probe = _open_in_view(sup, pid, dirfd, path, O_PATH | (flags & os.O_NOFOLLOW), 0,
                              resolve, nid)
    except OSError:
        return  # nothing there (created) or the real open's own error
    try:
        verify_copy_up(sup, probe, path.decode(errors="replace"))
    finally:
        os.close(probe)


def _verify_copy_up_of_own_fd(sup: Supervisor, pid: int, number: int, name: str) -> None:
    from pylos.runtime.syscalls.union import verify_copy_up

    try:
        probe = os.open(f"/proc/{pid}/fd/{number}", O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # no such descriptor: _reopen_own_fd answers
    try:
        verify_copy_up(sup, probe, name)
    finally:
        os.close(probe)


def _trusted_target_of_host_link(sup: Supervisor, pid: int, dirfd: int, path: bytes,
                                 nid: int) -> str | None:
    parent, _, name = path.rstrip(b"/").rpartition(b"/")
    if not name or name in (b".", b".."):
        return None
    if not parent:
        parent = b"/" if path.startswith(b"/") else b"."
    try:
        parent_fd = _open_in_view(sup, pid, dirfd, parent, O_PATH | os.O_DIRECTORY, 0, 0, nid)
    except OSError:
        return None
    try:
        host_dir = sup.config.host_path_of(os.readlink(f"/proc/self/fd/{parent_fd}"))
    finally:
        os.close(parent_fd)
    if host_dir is None:
        return None
    link = os.path.join(host_dir, os.fsdecode(name))
    if not os.path.islink(link):
        return None
    target = os.path.realpath(link)
    return target if sup.policy.trusted.has_path(target) else None


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
            if flags & os.O_CREAT and stat.S_ISDIR(st.st_mode):
                os.close(probe)  # the reopen drops O_CREAT, which the kernel refuses on one
                raise IsADirectoryError(errno.EISDIR, "O_CREAT on a directory")
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
        sup.trace(n, f'"{name}", {open_flags_text(flags)}', "fd (FIFO)")

    def serve() -> None:
        try:
            finish()
        except Exception as exc:  # as in the supervisor's loop: answered, logged, no traceback
            sup.internal_error(n, exc)

    import threading  # here: a FIFO open is rare, and threading costs every start ~1 ms

    threading.Thread(target=serve, name=f"pylos-fifo-{n.id}", daemon=True).start()


WRITE_INTENT = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# The opens the verified view's filter traps (any of these bits): all others only read what
# the view shows, which the kernel serves alone.
CHANGING_OPEN = WRITE_INTENT | O_TMPFILE_BIT


def _refuse_host_device(sup: Supervisor, pid: int, dirfd: int, path: bytes, flags: int,
                        resolve: int, nid: int, name: str) -> None:
    """Identity mode, an open for reading: a host device node is refused before it is opened
    (opening some acts: a watchdog starts, a tape rewinds). A path swapped in afterwards is
    still refused by admit, after its open."""
    try:
        probe = _open_in_view(sup, pid, dirfd, path, O_PATH | (flags & os.O_NOFOLLOW), 0,
                              resolve, nid)
    except OSError:
        return  # the open itself says why
    try:
        sup.policy.refuse_host_device(probe, os.fstat(probe), name)
    finally:
        os.close(probe)


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
        sup.policy.refuse_host_device(probe, st, name)  # before an open that could act
        # FIFOs and sockets write nothing to the host's file system.
        return os.open(str(probe), (flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW))
                       | os.O_CLOEXEC, dir_fd=_own_fds())
    finally:
        os.close(probe)


def _serve_o_path(sup: Supervisor, n: Notification, name: str, flags: int,
                  registers: bool) -> None:
    """An admitted O_PATH open. ADDFD cannot install an O_PATH descriptor (the kernel's fget()
    refuses them: EBADF), so the call continues and the kernel opens the path itself: safe
    on registers alone, as an O_PATH descriptor reads, writes, maps and executes nothing
    (reopening it through /proc/self/fd, or exec through it, is trapped and judged again).
    openat2's flags are in memory, where a racing thread could turn O_PATH into O_RDWR
    after this check: it answers ENOSYS, which openat2 users take as "fall back to openat"."""
    if registers:
        sup.trace(n, f'"{name}", {open_flags_text(flags)}', "O_PATH: judged, continued")
        sup.listener.allow(n.id)
        return
    sup.warn_once("openat2-o-path", "warning", "openat2 with O_PATH cannot be served (no "
                  "O_PATH descriptor can be installed in a trapped program): answered ENOSYS")
    sup.listener.reply(n.id, error=errno.ENOSYS)
    sup.trace(n, f'"{name}", {open_flags_text(flags)}', "-ENOSYS (O_PATH)")


def emulate_open(sup: Supervisor, n: Notification, dirfd: int, path_ptr: int, flags: int,
                 mode: int, resolve: int = 0, registers: bool = True) -> None:
    """Serve an open whose flags, mode and resolve already passed `check_open_how`;
    `registers`: whether they came from registers (open, openat), not memory (openat2)."""
    pid = n.pid
    try:
        path = read_path(pid, path_ptr)
    except OSError as exc:
        reply_unreadable(sup, n, exc)
        return
    if not sup.listener.id_valid(n.id):
        return  # the caller is gone or was interrupted: its memory meant nothing
    if not path:  # before the dirfd is looked at, as getname() fails first
        sup.listener.reply(n.id, error=errno.ENOENT)
        return
    name = path.decode(errors="replace")
    fd = -1
    try:
        if _will_create(flags):
            mode = mode & ~SET_ID_BITS & ~_umask(pid)
        if path.startswith(b"/") and resolve & RESOLVE_BENEATH:
            raise OSError(errno.EXDEV, "absolute path with RESOLVE_BENEATH")
        # RESOLVE_IN_ROOT: "/proc/self/fd/N" is a path below the dirfd, not a reopen.
        if not resolve & RESOLVE_IN_ROOT:
            path = _rewrite_proc_self(pid, path)
        own_fd = STD_STREAMS.get(path)
        match = FD_PATH.match(path)
        if resolve & RESOLVE_IN_ROOT:
            own_fd = match = None
        if (own_fd is not None or match) and resolve & (RESOLVE_NO_MAGICLINKS
                                                         | RESOLVE_NO_SYMLINKS):
            raise OSError(errno.ELOOP, "a magic link, refused by the program's resolve flags")
        if match and match.group(1) is not None and int(match.group(1)) != namespace_pid(pid):
            raise PolicyError(errno.EACCES, f"Disallowing access to file '{name}': another "
                              "process's descriptor")
        within_rights = False
        if own_fd is not None or match:
            number = own_fd if own_fd is not None else int(match.group(2))
            if flags & WRITE_INTENT and sup.policy.trusted.union is not None:
                _verify_copy_up_of_own_fd(sup, pid, number, name)
            fd, st, pending, within_rights = _reopen_own_fd(
                pid, number, flags & ~(os.O_CREAT | os.O_EXCL | os.O_CLOEXEC))
        else:
            judge_first = sup.policy.identity is not None
            if judge_first and not flags & WRITE_INTENT:
                _refuse_host_device(sup, pid, dirfd, path, flags, resolve, n.id, name)
            # A probe (O_PATH) or a reopen is no create: the mode goes with creating opens only.
            fd, st, pending = _open_without_blocking(
                lambda how: (_open_judged_by_path if judge_first and how & WRITE_INTENT
                             else _open_in_view_or_by_host_link)(
                                 sup, pid, dirfd, path, how & ~os.O_CLOEXEC,
                                 mode if _will_create(how) else 0, resolve, n.id), flags)
        if (sup.policy.identity is not None and not pending
                and foreign_process_entry(os.readlink(f"/proc/self/fd/{fd}"), thread_group(pid))):
            raise PolicyError(errno.EACCES, f"Disallowing access to file '{name}': another "
                              "process's /proc entry")
        served, verdict = (fd, "reopen of its own descriptor") if within_rights else (
            sup.policy.admit(fd, st, name, flags))
        if served == fd and st.st_size == 0 and stat.S_ISREG(st.st_mode) and not pending:
            table = mount_table(os.readlink(f"/proc/self/fd/{fd}"))
            if table is not None:  # procfs files are empty by stat
                served = fd = sanitized_copy(fd, table)
                verdict = "the enclave's mount table, without host paths"
        if served != fd:
            # A verified copy: a fresh open file description each time (own offset).
            os.close(fd)
            fd = os.open(str(served), os.O_RDONLY | os.O_CLOEXEC, dir_fd=_own_fds())
        elif pending:
            _finish_blocking_open(sup, n, fd, flags, name)
            fd = -1  # the thread owns it now
            return
        elif flags & O_PATH:
            _serve_o_path(sup, n, name, flags, registers)
            return
        sup.listener.reply_fd(n.id, fd, cloexec=bool(flags & os.O_CLOEXEC))
        sup.trace(n, f'"{name}", {open_flags_text(flags)}', f"fd: {verdict}")
    except PolicyError as exc:
        sup.log(exc.level, str(exc))
        sup.listener.reply(n.id, error=exc.errno)
        sup.trace(n, f'"{name}", {open_flags_text(flags)}',
                  f"-{errno.errorcode.get(exc.errno, exc.errno)}: refused ({exc})")
    except OSError as exc:
        err = _explain_failure(sup, pid, dirfd, path, name, resolve, exc.errno or errno.EIO)
        sup.listener.reply(n.id, error=err)
        sup.trace(n, f'"{name}", {open_flags_text(flags)}',
                  f"-{errno.errorcode.get(err, err)}")
    finally:
        if fd >= 0:
            os.close(fd)


def _explain_failure(sup: Supervisor, pid: int, dirfd: int, path: bytes, name: str,
                     resolve: int, err: int) -> int:
    """Read-only mounts say EROFS; Gramine says EACCES, with a log line saying why."""
    if err != errno.EROFS:
        return err
    try:
        fd = _open_in_view(sup, pid, dirfd, path, O_PATH, 0, resolve)
    except OSError:
        sup.log("error", f"Disallowing creating file '{name}'; file is not trusted or allowed.")
        return errno.EACCES
    try:
        if sup.policy.trusted.lookup(os.fstat(fd), fd) is not None:
            sup.log("error", f"Disallowing write/append to a trusted file '{name}'")
        else:
            sup.log("error", f"Disallowing access to file '{name}'; file is not allowed.")
    finally:
        os.close(fd)
    return errno.EACCES


def _serve(sup: Supervisor, n: Notification, dirfd: int, path_ptr: int, flags: int, mode: int,
           resolve: int = 0, strict: bool = False) -> None:  # strict: openat2, from memory
    """Registers first, as the kernel checks them before it reads the path."""
    try:
        check_open_how(flags, mode, resolve, strict)
    except OSError as exc:
        sup.listener.reply(n.id, error=exc.errno or errno.EINVAL)
        sup.trace(n, f"flags={flags:#o}, mode={mode:#o}, resolve={resolve:#x}",
                  f"-{errno.errorcode.get(exc.errno or 0, exc.errno)}")
        return
    emulate_open(sup, n, dirfd, path_ptr, flags, mode, resolve, registers=not strict)


def handle_open(sup: Supervisor, n: Notification) -> None:
    _serve(sup, n, AT_FDCWD, n.args[0], *legacy_open_how(n.args[1], n.args[2]))


def handle_creat(sup: Supervisor, n: Notification) -> None:
    _serve(sup, n, AT_FDCWD, n.args[0],
           *legacy_open_how(os.O_CREAT | os.O_WRONLY | os.O_TRUNC, n.args[1]))


def handle_openat(sup: Supervisor, n: Notification) -> None:
    _serve(sup, n, _int32(n.args[0]), n.args[1], *legacy_open_how(n.args[2], n.args[3]))


def read_open_how(pid: int, address: int, size: int) -> tuple[int, int, int]:
    """openat2's `struct open_how` as copy_struct_from_user reads it: EINVAL below its first
    version's 24 bytes, E2BIG above a page or for non-zero bytes beyond the fields known
    (checked first), EFAULT for anything unreadable."""
    if size < OPEN_HOW.size:
        raise OSError(errno.EINVAL, "open_how too small")
    if size > OPEN_HOW_MAX:
        raise OSError(errno.E2BIG, "open_how too big")
    if address == 0 or address + size > USER_ADDRESS_LIMIT:
        raise OSError(errno.EFAULT, "bad address")
    if size > OPEN_HOW.size:
        for chunk in read_chunks(pid, address + OPEN_HOW.size, size - OPEN_HOW.size):
            if chunk.count(0) != len(chunk):
                raise OSError(errno.E2BIG, "unknown open_how fields set")
    flags, mode, resolve = OPEN_HOW.unpack(read_memory(pid, address, OPEN_HOW.size))
    return flags, mode, resolve


def handle_openat2(sup: Supervisor, n: Notification) -> None:
    try:
        flags, mode, resolve = read_open_how(n.pid, n.args[2], n.args[3])
    except OSError as exc:
        reply_unreadable(sup, n, exc)
        return
    if not sup.listener.id_valid(n.id):
        return
    # Unlike open(2), O_LARGEFILE is not added for O_PATH: the flags stay as checked.
    _serve(sup, n, _int32(n.args[0]), n.args[1], flags, mode, resolve, strict=True)
