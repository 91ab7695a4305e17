"""exec and clone: verify and stage what the kernel maps, count threads against `sgx.max_threads`.

The kernel maps an executable, its ELF interpreter (PT_INTERP) and a script's `#!`
interpreter itself, with no notification for the latter two, so all of them are resolved in
the view and verified here, and each verified copy is staged over its path in the view
(`runtime/staging.py`) before the exec may proceed. Exec cannot be emulated, so the call is
then CONTINUEd: host binds and tmpfs mounts are noexec and memfds sealed non-executable,
so whatever path the kernel resolves it can only map staged, verified bytes.
"""

from __future__ import annotations

import errno
import os
import stat
import struct

from pylos.runtime.policy import PolicyError
from pylos.runtime.syscalls.files import AT_FDCWD, _int32, _open_in_view, reply_unreadable
from pylos.runtime.syscalls.table import SYSCALLS
from pylos.runtime.target import mount_id, read_path, thread_group
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from pylos.runtime.seccomp import Notification
    from pylos.runtime.supervisor import Supervisor

AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
# Linux 6.14+: only check that the file may be executed, and answer 0 (the kernel does, once
# the call continues; an older kernel answers EINVAL itself).
AT_EXECVE_CHECK = 0x10000
EXECVEAT_FLAGS = AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_EXECVE_CHECK  # any other bit: EINVAL
CLONE_VM = 0x00000100
CLONE_SIGHAND = 0x00000800
CLONE_THREAD = 0x00010000
MAX_INTERPRETER_DEPTH = 4
ELF_HEADER = struct.Struct("<4sBBBBB7xHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
PT_INTERP = 3
CLONE_NR = str(SYSCALLS["clone"]).encode()


def interpreter_of(fd: int) -> bytes | None:
    """The path a kernel exec would also map: `#!` interpreter or ELF PT_INTERP."""
    head = os.pread(fd, 256, 0)
    if head.startswith(b"#!"):
        line = head[2:].split(b"\n", 1)[0].strip()
        return line.split()[0] if line else None
    if not head.startswith(b"\x7fELF") or len(head) < ELF_HEADER.size:
        return None
    fields = ELF_HEADER.unpack_from(head)
    phoff, phentsize, phnum = fields[10], fields[14], fields[15]
    table = os.pread(fd, phentsize * phnum, phoff)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz, _, _ = PHDR.unpack_from(table, i * phentsize)
        if p_type == PT_INTERP:
            return os.pread(fd, p_filesz, p_offset).rstrip(b"\0")
    return None


def verify_executable(sup: Supervisor, pid: int, fd: int, name: str, depth: int = 0) -> None:
    """Raise PolicyError unless `fd` (and any interpreter it names) is trusted and intact;
    stage the verified copies where the kernel will look for them."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise PolicyError(errno.EACCES, f"Disallowing exec of '{name}': not a regular file")
    trusted = sup.policy.trusted
    if trusted.verified_mounts:
        # The verified view: the kernel is the wall (only its binds are executable, and
        # they map verified bytes); this look is for Gramine's messages, so a racing
        # thread that swaps the path after it changes nothing.
        verified = mount_id(fd) in trusted.verified_mounts
        if verified and trusted.in_verified_view(fd) is not None:
            return
        if not sup.policy.allow_all_but_log:
            raise PolicyError(errno.EACCES, f"Disallowing access to file '{name}'; file is not "
                              "allowed.")
        sup.log("warning", f"Allowing access to unknown file '{name}' due to file_check_policy.")
        return
    if (st.st_dev, st.st_ino) in trusted.staged or (st.st_dev, st.st_ino) in trusted.copy_inodes:
        # Verified bytes already: a staged copy, or the sealed copy a trusted open gave the
        # program (execveat(fd, "", AT_EMPTY_PATH)). A thread that swaps the descriptor after
        # this check can only swap in another such copy: every other descriptor a program
        # can hold is of a noexec mount or a memfd sealed non-executable.
        content = fd
    else:
        view_path = os.readlink(f"/proc/self/fd/{fd}")
        entry = trusted.lookup(st, fd)
        if entry is not None:
            content = trusted.verified_copy(fd, *entry, st).memfd
        elif sup.policy.allow_all_but_log:
            sup.log("warning", f"Allowing access to unknown file '{name}' due to "
                    "file_check_policy.")
            content = fd
        else:
            raise PolicyError(errno.EACCES, f"Disallowing access to file '{name}'; file is not "
                              "allowed.")
        _stage(sup, pid, view_path, content, name)
    interpreter = interpreter_of(content)
    if interpreter is None:
        return
    if depth >= MAX_INTERPRETER_DEPTH:
        raise PolicyError(errno.ELOOP, f"too many nested interpreters for '{name}'")
    interp_fd = _open_in_view(sup, pid, AT_FDCWD, interpreter, os.O_RDONLY, 0, 0)
    try:
        verify_executable(sup, pid, interp_fd, interpreter.decode(errors="replace"), depth + 1)
    finally:
        os.close(interp_fd)


def _stage(sup: Supervisor, pid: int, view_path: str, content: int, name: str) -> None:
    """Have init bind `content` over `view_path`, and check the view now shows it there.
    Identity mode (no mount namespace, runtime/identity.py) cannot stage: verified only."""
    if sup.stager is None:
        return
    staged = sup.stager.stage(view_path, content)
    check = _open_in_view(sup, pid, AT_FDCWD, view_path.encode(), os.O_PATH, 0, 0)
    try:
        st = os.fstat(check)
    finally:
        os.close(check)
    if (st.st_dev, st.st_ino) != staged:
        raise PolicyError(errno.EACCES, f"Disallowing exec of '{name}': its path changed while "
                          "it was being staged")
    sup.policy.trusted.staged.add(staged)
    if sup.log.trace:
        sup.log("trace", f"staged '{view_path}' for exec")


def _verify_exec(sup: Supervisor, n: Notification, dirfd: int, path_ptr: int, flags: int) -> None:
    """In the kernel's order: the path is read (EFAULT, ENAMETOOLONG; ENOENT when empty
    without AT_EMPTY_PATH), then the flags are checked (EINVAL), then the file is opened.
    argv and envp are the kernel's to read once the call continues (EFAULT, E2BIG)."""
    try:
        path = read_path(n.pid, path_ptr)
    except OSError as exc:
        reply_unreadable(sup, n, exc)
        return
    if not sup.listener.id_valid(n.id):
        return
    if not path and not flags & AT_EMPTY_PATH:
        sup.listener.reply(n.id, error=errno.ENOENT)
        return
    if flags & ~EXECVEAT_FLAGS:
        sup.listener.reply(n.id, error=errno.EINVAL)
        return
    name = path.decode(errors="replace")
    fd = -1
    try:
        if not path:  # AT_EMPTY_PATH: the dirfd itself
            link = f"/proc/{n.pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{n.pid}/fd/{dirfd}"
            try:
                fd = os.open(link, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise OSError(errno.EBADF, "bad dirfd") from None
        else:
            nofollow = os.O_NOFOLLOW if flags & AT_SYMLINK_NOFOLLOW else 0
            fd = _open_in_view(sup, n.pid, dirfd, path, os.O_RDONLY | nofollow, 0, 0)
        verify_executable(sup, n.pid, fd, name)
    except PolicyError as exc:
        sup.log(exc.level, str(exc))
        sup.listener.reply(n.id, error=exc.errno)
        sup.trace(n, f'"{name}"', f"-{errno.errorcode.get(exc.errno, exc.errno)}")
        return
    except OSError as exc:
        sup.listener.reply(n.id, error=exc.errno or errno.EIO)
        sup.trace(n, f'"{name}"', f"-{errno.errorcode.get(exc.errno or 0, exc.errno)}")
        return
    finally:
        if fd >= 0:
            os.close(fd)
    sup.trace(n, f'"{name}"', "verified, continue")
    sup.listener.allow(n.id)


def handle_execve(sup: Supervisor, n: Notification) -> None:
    _verify_exec(sup, n, AT_FDCWD, n.args[0], 0)


def handle_execveat(sup: Supervisor, n: Notification) -> None:
    _verify_exec(sup, n, _int32(n.args[0]), n.args[1], _int32(n.args[4]))


def handle_clone(sup: Supervisor, n: Notification) -> None:
    """Only trapped for clone(CLONE_THREAD) (thread limit) and, when subprocesses are
    disabled, for process creation; the decision uses registers only, so CONTINUE is safe.

    clone(2) takes the low 32 bits of its flags. A combination the kernel refuses before
    anything else (CLONE_THREAD without CLONE_SIGHAND, CLONE_SIGHAND without CLONE_VM) is
    answered EINVAL, as the kernel would, rather than counted or refused as a subprocess.
    """
    flags = n.args[0] & 0xFFFFFFFF
    if (flags & CLONE_THREAD and not flags & CLONE_SIGHAND) or (
            flags & CLONE_SIGHAND and not flags & CLONE_VM):
        sup.listener.reply(n.id, error=errno.EINVAL)
        return
    if not flags & CLONE_THREAD:
        refuse_subprocess(sup, n)
        return
    limit = sup.config.max_threads
    try:
        tgid = thread_group(n.pid)
        tasks = len(os.listdir(f"/proc/{tgid}/task"))
    except OSError:
        sup.listener.allow(n.id)
        return
    # Clones let through whose thread may not exist yet: those of callers still inside clone.
    # A caller now in any other state (or gone) has finished its clone, and the new thread is
    # in `tasks` as long as it lives: counting clones instead would leak with thread churn.
    pending = {tid for tid in sup.threads.get(tgid, ()) if tid != n.pid and _in_clone(tgid, tid)}
    if limit is not None and tasks + len(pending) >= limit:
        sup.log("error", "There are no available TCS pages left for a new thread. Please try to "
                "increase sgx.max_threads in the manifest. The current value is "
                f"{limit}")
        sup.threads[tgid] = pending
        sup.listener.reply(n.id, error=errno.ENOMEM)
        return
    sup.threads[tgid] = pending | {n.pid}
    sup.listener.allow(n.id)


def _in_clone(tgid: int, tid: int) -> bool:
    """Whether thread `tid` is in clone (or waiting for us to answer another clone)."""
    try:
        with open(f"/proc/{tgid}/task/{tid}/syscall", "rb") as f:
            return f.read().split(b" ", 1)[0] == CLONE_NR
    except OSError:
        return False  # gone: its clone, if any, is over


def refuse_subprocess(sup: Supervisor, n: Notification) -> None:
    sup.warn_once("subprocess", "warning", "The app tried to create a subprocess, but this is "
                  "disabled (sys.disallow_subprocesses = true)")
    sup.listener.reply(n.id, error=errno.EAGAIN)


def handle_mocked(sup: Supervisor, n: Notification) -> None:
    """`sys.debug__mock_syscalls` entries with a positive return value."""
    from pylos.runtime.syscalls.table import NAMES

    sup.listener.reply(n.id, value=sup.config.mock_syscalls[NAMES[n.nr]])
