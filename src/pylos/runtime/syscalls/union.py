"""A union root's copy-ups, verified (`fs.root.type = "union"`, runtime/policy.py UnionRoot).

Changing a file of the layer below (opening it for writing, rename, link, truncate, chmod,
chown, utime) makes overlayfs copy it up: its bytes, read from the host, become the enclave's
own file, which is then served without a hash check. So before any such change to a trusted
file still below, the supervisor makes the copy-up itself (an open for writing that writes
nothing), then hashes the upper copy: a host that swapped the bytes before or during the
copy is caught, as nobody but the enclave writes the upper layer. A copy that does not match
is emptied at once (the program never sees those bytes) and the call fails with EPERM and
Gramine's hash-mismatch line; a matching one is rewritten from the verified copy (for an
encrypted image, whose files below are ciphertext, that is the plaintext, kept in enclave
memory). Only then does the change itself go on.

The rename, link and truncate families are trapped only for enclaves with a union root.
"""

from __future__ import annotations

import errno
import os
import stat

from pylos.runtime.policy import PolicyError
from pylos.runtime.syscalls.files import AT_FDCWD, _int32, _open_in_view
from pylos.runtime.target import read_path
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from pylos.runtime.seccomp import Notification
    from pylos.runtime.supervisor import Supervisor

AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000


def verify_copy_up(sup: Supervisor, fd: int, name: str) -> None:
    """Raise PolicyError unless changing the file `fd` names (any descriptor of it in the
    view, O_PATH included) cannot expose unverified bytes; copies it up verified if needed."""
    union = sup.policy.trusted.union
    if union is None or not union.holds(fd) or not stat.S_ISREG(os.fstat(fd).st_mode):
        return
    if union.in_upper(fd):
        return
    entry = sup.policy.trusted.by_path(fd)
    if entry is None:
        raise PolicyError(errno.EACCES, f"Disallowing access to file '{name}'; file is not "
                          "allowed.")
    host, expected = entry
    writer = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_CLOEXEC)  # the copy-up
    try:
        reader = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)  # now the copy
        try:
            verified = sup.policy.trusted.verified_copy(reader, host, expected)
        except PolicyError:
            os.ftruncate(writer, 0)
            raise
        finally:
            os.close(reader)
        # The upper copy becomes the verified bytes themselves: the plaintext, too, of an
        # encrypted image's file (pylos build --image-key), whose lower copy is ciphertext.
        os.ftruncate(writer, 0)
        offset = 0
        while offset < verified.size:
            sent = os.sendfile(writer, verified.memfd, offset, verified.size - offset)
            if sent == 0:
                raise OSError(errno.EIO, "short copy-up")
            offset += sent
    finally:
        os.close(writer)


def _check_path(sup: Supervisor, n: Notification, dirfd: int, path_ptr: int,
                follow: bool) -> None:
    try:
        path = read_path(n.pid, path_ptr)
        fd = _open_in_view(sup, n.pid, dirfd, path, os.O_PATH | (0 if follow else os.O_NOFOLLOW),
                           0, 0, n.id)
    except OSError:
        sup.listener.allow(n.id)  # the kernel gives the program its own answer (ENOENT...)
        return
    try:
        verify_copy_up(sup, fd, path.decode(errors="replace"))
    except PolicyError as exc:
        sup.log(exc.level, str(exc))
        sup.listener.reply(n.id, error=exc.errno)
        return
    except OSError as exc:
        sup.listener.reply(n.id, error=exc.errno or errno.EIO)
        return
    finally:
        os.close(fd)
    sup.listener.allow(n.id)


def handle_rename(sup: Supervisor, n: Notification) -> None:
    _check_path(sup, n, AT_FDCWD, n.args[0], follow=False)


def handle_renameat(sup: Supervisor, n: Notification) -> None:  # renameat2 too
    _check_path(sup, n, _int32(n.args[0]), n.args[1], follow=False)


def handle_link(sup: Supervisor, n: Notification) -> None:
    _check_path(sup, n, AT_FDCWD, n.args[0], follow=False)


def handle_linkat(sup: Supervisor, n: Notification) -> None:
    if n.args[4] & AT_EMPTY_PATH:
        sup.listener.reply(n.id, error=errno.EPERM)  # linking a descriptor: not in a union
        return
    _check_path(sup, n, _int32(n.args[0]), n.args[1], follow=bool(n.args[4] & AT_SYMLINK_FOLLOW))


def handle_truncate(sup: Supervisor, n: Notification) -> None:
    _check_path(sup, n, AT_FDCWD, n.args[0], follow=True)


HANDLERS = {"rename": handle_rename, "renameat": handle_renameat, "renameat2": handle_renameat,
            "link": handle_link, "linkat": handle_linkat, "truncate": handle_truncate}
