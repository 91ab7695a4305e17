"""access, faccessat, faccessat2 with X_OK: as the view means it.

Host binds are noexec (the kernel runs staged, verified copies: runtime/staging.py), so the
kernel answers EACCES to access(X_OK) of every trusted executable: gcc then finds no cc1,
`which` no program, make no shell. Only calls asking X_OK are trapped (the filter looks at the
mode register). For a regular file on a noexec mount the supervisor answers: X_OK holds when
the file is trusted and its mode has an x bit (what an exec of it would run, once verified);
R_OK and W_OK are the kernel's answer for that very file. Anything else goes on to the kernel.
The path is read once and the file judged is the one answered for.
"""

from __future__ import annotations

import errno
import os
import stat

from pylos.runtime.syscalls.files import AT_FDCWD, _int32, _open_in_view
from pylos.runtime.target import read_path
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from pylos.runtime.seccomp import Notification
    from pylos.runtime.supervisor import Supervisor

X_OK = 1
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000


def _answer(sup: Supervisor, fd: int, mode: int) -> int | None:
    """The errno (0: success) for a trusted file on a noexec mount, else None (the kernel's)."""
    st = os.fstat(fd)
    mount_flags = os.fstatvfs(fd).f_flag
    if not stat.S_ISREG(st.st_mode) or not mount_flags & os.ST_NOEXEC:
        return None
    if sup.policy.trusted.lookup(st, fd) is None:
        return None  # it cannot run: the kernel's EACCES is the truth
    if not st.st_mode & 0o111:
        return errno.EACCES
    rest = mode & ~X_OK
    if rest and not os.access(f"/proc/self/fd/{fd}", rest):
        return errno.EROFS if rest & os.W_OK and mount_flags & os.ST_RDONLY else errno.EACCES
    return 0


def _serve(sup: Supervisor, n: Notification, dirfd: int, path_ptr: int, mode: int,
           flags: int) -> None:
    try:
        path = read_path(n.pid, path_ptr)
        if not path and flags & AT_EMPTY_PATH:
            fd = os.open(f"/proc/{n.pid}/fd/{dirfd}", os.O_PATH | os.O_CLOEXEC)
        else:
            nofollow = os.O_NOFOLLOW if flags & AT_SYMLINK_NOFOLLOW else 0
            fd = _open_in_view(sup, n.pid, dirfd, path, os.O_PATH | nofollow, 0, 0, n.id)
    except OSError:
        sup.listener.allow(n.id)  # the kernel gives the program its own answer
        return
    try:
        answer = _answer(sup, fd, mode)
    except OSError:
        answer = None
    finally:
        os.close(fd)
    if answer is None:
        sup.listener.allow(n.id)
    else:
        sup.listener.reply(n.id, error=answer)


def handle_access(sup: Supervisor, n: Notification) -> None:
    _serve(sup, n, AT_FDCWD, n.args[0], n.args[1], 0)


def handle_faccessat(sup: Supervisor, n: Notification) -> None:
    _serve(sup, n, _int32(n.args[0]), n.args[1], n.args[2], 0)


def handle_faccessat2(sup: Supervisor, n: Notification) -> None:
    _serve(sup, n, _int32(n.args[0]), n.args[1], n.args[2], n.args[3])


# system call -> (handler, index of its mode argument)
HANDLERS = {"access": (handle_access, 1), "faccessat": (handle_faccessat, 2),
            "faccessat2": (handle_faccessat2, 2)}
