"""chmod, chown and utime families: emulated on what was judged.

Landlock has no right for metadata, and a program that is root in its user namespace is root
for every host inode its ids own (all of them when pylos runs as root). Without namespaces
(runtime/identity.py) that is the host's whole file system; in namespace mode it is what the
view's read-only binds do not cover: the standard streams the caller of `pylos run` passed
(a host file or device, even /dev/null itself), reached by `fchmod(0)` or through
/proc/self/fd/0. So these calls are trapped in both modes: the supervisor resolves the
target as the program would (its cwd or dirfd; `AT_SYMLINK_NOFOLLOW`; `AT_EMPTY_PATH`), judges
the file it found (identity mode: allowed directories and files, /dev/shm; namespace mode: a
writable or enclave-private mount of the view, EROFS on the view's read-only binds; in both,
objects with no host path such as pipes, sockets and memfds), and applies the change to
that very file through its descriptor. A racing thread that rewrites the path changes
nothing: the path was read once, and what was judged is what is changed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from pylos.runtime.policy import PolicyError
from pylos.runtime.syscalls.files import AT_FDCWD, _int32, _open_in_view, reply_unreadable
from pylos.runtime.syscalls.union import verify_copy_up
from pylos.runtime.target import mount_id, read_memory, read_path
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from pylos.runtime.seccomp import Notification
    from pylos.runtime.supervisor import Supervisor

AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
TIMESPEC_PAIR = struct.Struct("<qqqq")  # struct timespec[2]
TIMEVAL_PAIR = TIMESPEC_PAIR  # struct timeval[2]: the same shape (seconds, microseconds)
UTIMBUF = struct.Struct("<qq")
NO_ID = 0xFFFFFFFF  # (uid_t) -1: leave unchanged

_libc = ctypes.CDLL(None, use_errno=True)


def _target(sup: Supervisor, n: Notification, dirfd: int, path_ptr: int | None,
            flags: int) -> tuple[int, str]:
    """An O_PATH descriptor of the file the call names, and a name for the log."""
    if path_ptr is None:  # an fd call: the program's descriptor itself
        return _own_descriptor(n.pid, dirfd), f"fd {dirfd}"
    path = read_path(n.pid, path_ptr)
    if not sup.listener.id_valid(n.id):
        raise OSError(errno.ESRCH, "the caller is gone")
    if not path:
        if not flags & AT_EMPTY_PATH:
            raise OSError(errno.ENOENT, "empty path")
        if dirfd == AT_FDCWD:
            return os.open(f"/proc/{n.pid}/cwd", os.O_PATH | os.O_CLOEXEC), "."
        return _own_descriptor(n.pid, dirfd), f"fd {dirfd}"
    nofollow = os.O_NOFOLLOW if flags & AT_SYMLINK_NOFOLLOW else 0
    return (_open_in_view(sup, n.pid, dirfd, path, os.O_PATH | nofollow, 0, 0, n.id),
            path.decode(errors="replace"))


def _own_descriptor(pid: int, fd: int) -> int:
    try:
        return os.open(f"/proc/{pid}/fd/{fd}", os.O_PATH | os.O_CLOEXEC)
    except OSError:
        raise OSError(errno.EBADF, "bad file descriptor") from None


def _judge(sup: Supervisor, fd: int, name: str) -> None:
    where = os.readlink(f"/proc/self/fd/{fd}")
    if not where.startswith("/"):
        return  # pipe:[..], socket:[..], anon_inode:..: nothing on the host's file system
    if where.startswith("/memfd:"):
        return
    policy = sup.policy.identity
    if policy is None:
        mnt_id = mount_id(fd)
        if mnt_id in sup.policy.writable_mounts or mnt_id in sup.policy.private_mounts:
            return
        union = sup.policy.trusted.union
        if union is not None and mnt_id == union.mount_id:
            return  # a union root changes above the image (verify_copy_up next)
        if os.fstatvfs(fd).f_flag & os.ST_RDONLY:
            raise OSError(errno.EROFS, "a read-only mount of the view")
        raise PolicyError(errno.EPERM, f"Disallowing changing the attributes of '{name}'; "
                          "it is a host file outside the view.")
    if not (policy.allows(where) or policy.allows_below(where)):
        raise PolicyError(errno.EPERM, f"Disallowing changing the attributes of '{name}'; "
                          "file is not allowed.")


def _serve(sup: Supervisor, n: Notification, dirfd: int, path_ptr: int | None, flags: int,
           change) -> None:
    fd = -1
    try:
        fd, name = _target(sup, n, dirfd, path_ptr, flags)
        _judge(sup, fd, name)
        verify_copy_up(sup, fd, name)
        change(f"/proc/self/fd/{fd}")
        sup.listener.reply(n.id, 0)
    except PolicyError as exc:
        sup.log(exc.level, str(exc))
        sup.listener.reply(n.id, error=exc.errno)
    except OSError as exc:
        if sup.listener.id_valid(n.id):
            sup.listener.reply(n.id, error=exc.errno or errno.EIO)
    finally:
        if fd >= 0:
            os.close(fd)


def _chmod(mode: int):
    return lambda target: os.chmod(target, mode & 0o7777)


def _chown(uid: int, gid: int):
    def change(target: str) -> None:
        os.chown(target, -1 if uid & NO_ID == NO_ID else uid & NO_ID,
                 -1 if gid & NO_ID == NO_ID else gid & NO_ID)
    return change


def _utime(times: bytes | None):
    """`times`: two struct timespec as utimensat takes them, or None for now."""
    def change(target: str) -> None:
        buf = ctypes.create_string_buffer(times, len(times)) if times is not None else None
        if _libc.utimensat(AT_FDCWD, target.encode(), buf, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    return change


def handle_chmod(sup: Supervisor, n: Notification) -> None:
    _serve(sup, n, AT_FDCWD, n.args[0], 0, _chmod(n.args[1]))


def handle_fchmod(sup: Supervisor, n: Notification) -> None:
    _serve(sup, n, _int32(n.args[0]), None, 0, _chmod(n.args[1]))


def handle_fchmodat(sup: Supervisor, n: Notification) -> None:
    _serve(sup, n, _int32(n.args[0]), n.args[1], 0, _chmod(n.args[2]))


def handle_fchmodat2(sup: Supervisor, n: Notification) -> None:
    flags = n.args[3] & 0xFFFFFFFF
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        sup.listener.reply(n.id, error=errno.EINVAL)
        return
    _serve(sup, n, _int32(n.args[0]), n.args[1], flags, _chmod(n.args[2]))


def handle_chown(sup: Supervisor, n: Notification) -> None:
    _serve(sup, n, AT_FDCWD, n.args[0], 0, _chown(n.args[1], n.args[2]))


def handle_lchown(sup: Supervisor, n: Notification) -> None:
    _serve(sup, n, AT_FDCWD, n.args[0], AT_SYMLINK_NOFOLLOW, _chown(n.args[1], n.args[2]))


def handle_fchown(sup: Supervisor, n: Notification) -> None:
    _serve(sup, n, _int32(n.args[0]), None, 0, _chown(n.args[1], n.args[2]))


def handle_fchownat(sup: Supervisor, n: Notification) -> None:
    flags = n.args[4] & 0xFFFFFFFF
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        sup.listener.reply(n.id, error=errno.EINVAL)
        return
    _serve(sup, n, _int32(n.args[0]), n.args[1], flags, _chown(n.args[2], n.args[3]))


def _read_times(n: Notification, address: int, layout: struct.Struct,
                to_timespec) -> bytes | None:
    if address == 0:
        return None
    return to_timespec(layout.unpack(read_memory(n.pid, address, layout.size)))


def _timeval_times(values: tuple[int, ...]) -> bytes:
    a_sec, a_usec, m_sec, m_usec = values
    if not (0 <= a_usec < 1_000_000 and 0 <= m_usec < 1_000_000):
        raise OSError(errno.EINVAL, "bad timeval")
    return TIMESPEC_PAIR.pack(a_sec, a_usec * 1000, m_sec, m_usec * 1000)


def handle_utime(sup: Supervisor, n: Notification) -> None:
    try:
        times = _read_times(n, n.args[1], UTIMBUF,
                            lambda v: TIMESPEC_PAIR.pack(v[0], 0, v[1], 0))
    except OSError as exc:
        reply_unreadable(sup, n, exc)
        return
    _serve(sup, n, AT_FDCWD, n.args[0], 0, _utime(times))


def handle_utimes(sup: Supervisor, n: Notification) -> None:
    try:
        times = _read_times(n, n.args[1], TIMEVAL_PAIR, _timeval_times)
    except OSError as exc:
        reply_unreadable(sup, n, exc)
        return
    _serve(sup, n, AT_FDCWD, n.args[0], 0, _utime(times))


def handle_futimesat(sup: Supervisor, n: Notification) -> None:
    try:
        times = _read_times(n, n.args[2], TIMEVAL_PAIR, _timeval_times)
    except OSError as exc:
        reply_unreadable(sup, n, exc)
        return
    _serve(sup, n, _int32(n.args[0]), n.args[1] or None, 0, _utime(times))


def handle_utimensat(sup: Supervisor, n: Notification) -> None:
    flags = n.args[3] & 0xFFFFFFFF
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        sup.listener.reply(n.id, error=errno.EINVAL)
        return
    try:
        times = _read_times(n, n.args[2], TIMESPEC_PAIR, lambda v: TIMESPEC_PAIR.pack(*v))
    except OSError as exc:
        reply_unreadable(sup, n, exc)
        return
    # utimensat(fd, NULL, ...) is futimens: the descriptor itself.
    path_ptr = n.args[1] or None
    _serve(sup, n, _int32(n.args[0]), path_ptr, flags, _utime(times))


HANDLERS = {
    "chmod": handle_chmod, "fchmod": handle_fchmod, "fchmodat": handle_fchmodat,
    "fchmodat2": handle_fchmodat2, "chown": handle_chown, "lchown": handle_lchown,
    "fchown": handle_fchown, "fchownat": handle_fchownat, "utime": handle_utime,
    "utimes": handle_utimes, "futimesat": handle_futimesat, "utimensat": handle_utimensat,
}
