"""rmdir and unlinkat(AT_REMOVEDIR): Gramine's answer on read-only mounts.

The view's trusted binds are read-only mounts, where the kernel answers EROFS; Gramine answers
EACCES (its trusted files are read-only by policy, not by a read-only file system), and
programs tested on Gramine check for it. The supervisor only looks at the parent directory:
on a read-only mount it answers EACCES, otherwise the kernel removes the directory as the
program, under the program's own Landlock rules. A thread that swaps the path after the look
changes the answer's errno at most, never what the program may remove.
"""

from __future__ import annotations

import errno
import os
import stat

from pylos.runtime.syscalls.files import AT_FDCWD, _int32, _open_in_view, reply_unreadable
from pylos.runtime.target import read_path
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from pylos.runtime.seccomp import Notification
    from pylos.runtime.supervisor import Supervisor

AT_REMOVEDIR = 0x200


def _read_only_answer(sup: Supervisor, n: Notification, dirfd: int, path: bytes) -> int:
    """Gramine's errno when the directory to remove is on a read-only mount (it looks the
    target up first: ENOENT, ENOTDIR), else 0: the kernel's own answer is the right one."""
    parent = os.path.dirname(path.rstrip(b"/")) or (b"/" if path.startswith(b"/") else b".")
    try:
        fd = _open_in_view(sup, n.pid, dirfd, parent, os.O_PATH | os.O_DIRECTORY, 0, 0, n.id)
    except OSError:
        return 0
    try:
        if not os.fstatvfs(fd).f_flag & os.ST_RDONLY:
            return 0
    finally:
        os.close(fd)
    try:
        fd = _open_in_view(sup, n.pid, dirfd, path, os.O_PATH | os.O_NOFOLLOW, 0, 0, n.id)
    except OSError as exc:
        return exc.errno or errno.ENOENT
    try:
        return errno.EACCES if stat.S_ISDIR(os.fstat(fd).st_mode) else errno.ENOTDIR
    finally:
        os.close(fd)


def _serve(sup: Supervisor, n: Notification, dirfd: int, path_ptr: int) -> None:
    try:
        path = read_path(n.pid, path_ptr)
    except OSError as exc:
        reply_unreadable(sup, n, exc)
        return
    answer = _read_only_answer(sup, n, dirfd, path) if path else 0
    if answer:
        if answer == errno.EACCES:
            sup.log("warning", "Disallowing removing directory "
                    f"'{path.decode(errors='replace')}'; it is on a read-only mount.")
        sup.listener.reply(n.id, error=answer)
        return
    sup.listener.allow(n.id)


def handle_rmdir(sup: Supervisor, n: Notification) -> None:
    _serve(sup, n, AT_FDCWD, n.args[0])


def handle_unlinkat(sup: Supervisor, n: Notification) -> None:
    """Trapped only with AT_REMOVEDIR (the filter lets plain unlinks through)."""
    _serve(sup, n, _int32(n.args[0]), n.args[1])
