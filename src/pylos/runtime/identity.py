"""Identity mounts: running where Linux namespaces are unavailable.

Some hosts forbid unprivileged user namespaces (containers with a strict seccomp profile,
Ubuntu's AppArmor restriction, `user.max_user_namespaces = 0`). pylos then cannot build a
private view: the program runs on the host's own file system, each enclave path equal to its
host path, and a manifest that needs path translation is refused, naming the fix.

What still holds: every open is emulated and judged as always (trusted files verified and
served as sealed copies, files neither trusted nor allowed refused), and an open that may
write happens only inside `sgx.allowed_files` (judged on the resolved directory, then opened
beneath it). Landlock (unprivileged, needs no namespace) confines the calls that are not
trapped: the program may create, remove, rename, link or truncate only inside allowed paths,
and exec only from the manifest's mounts.

What does not: exec staging (the kernel maps the host file after its verification); tmpfs and
encrypted mounts and synthesized files (they need a mount namespace: refused); the program
sees the host's /proc and PIDs and runs as the invoking user (`loader.uid`/`gid` ignored).
At exit, init (a child subreaper) kills whatever the program left running.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
from collections.abc import Iterable

from pylos.errors import PylosError
from pylos.runtime import landlock
from pylos.runtime.target import thread_group
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from pylos.runtime.config import EnclaveConfig

# Why unshare(CLONE_NEWUSER | ...) fails on hosts that forbid it.
UNAVAILABLE_ERRNOS = (errno.EPERM, errno.EACCES, errno.ENOSPC, errno.EINVAL, errno.EUSERS,
                      errno.ENOSYS)

def translation_needed(config: EnclaveConfig, synthesized: Iterable[str] = ()) -> list[str]:
    """What in this manifest needs a private view (so cannot run with identity mounts):
    `synthesized` are the files the view would hold (RA-TLS credentials, provisioned
    secrets, resolv.conf), which have no place on the host's own file system."""
    problems = [f"the file '{path}' made for the enclave" for path in synthesized]
    if config.root.host != "/":
        problems.append(f"fs.root is '{config.root.host}' on the host, not '/'")
    for mount in config.mounts:
        if mount.type != "chroot":
            problems.append(f"the {mount.type} mount at '{mount.path}'")
        elif mount.host != mount.path:
            problems.append(f"'{mount.path}' is '{mount.host}' on the host")
    return problems


def check_identity_possible(config: EnclaveConfig, reason: str, fix: str,
                            synthesized: Iterable[str] = ()) -> None:
    problems = translation_needed(config, synthesized)
    if problems:
        raise PylosError(
            f"Linux namespaces are unavailable here ({reason}), so pylos can only run with "
            "identity mounts (each enclave path is the same host path), and this manifest "
            f"needs path translation: {'; '.join(problems)}. Fix: allow user namespaces{fix}, "
            "or mount every host path at its own path with fs.root = \"file:/\"")


def landlock_rules(config: EnclaveConfig) -> list[tuple[str, int]]:
    """(host path, access rights) the program keeps (runtime/landlock.py); everything else
    is out of reach. Without noexec binds and exec staging, Landlock is what keeps exec to
    trusted files: execute is granted on each trusted file that has an x bit (nothing else
    can be executed), so an exec whose path a thread swaps after the check still cannot
    run a host file that is not trusted."""
    rules = [(mount.host, landlock.READ_ONLY) for mount in [config.root, *config.mounts]
             if mount.host]
    rules += [(path, landlock.EXECUTE) for path in config.trusted if _executable(path)]
    rules += [(path.rstrip("/") or "/", landlock.WRITABLE) for path in config.allowed]
    return [*rules, *landlock.HOST_DEVICES_AND_PROC]


def _executable(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & 0o111)
    except OSError:
        return False  # missing now: the run refuses it when it is used


# /proc/<pid>/<entry> of another process: what the supervisor must not open for the program.
# It opens with its own rights, which in identity mode reach the enclave's init, the
# supervisor itself and the host user's other processes (mem, environ, fd, maps...).
PROCESS_ENTRY = re.compile(r"^/proc/(\d+)/([^/]+)")
HARMLESS_PROCESS_ENTRIES = frozenset({"stat", "statm", "status", "comm"})


def foreign_process_entry(path: str, caller_tgid: int) -> bool:
    """Whether `path` is a /proc entry of another process than the caller's, other than the
    few that ps and top read."""
    match = PROCESS_ENTRY.match(path)
    if match is None or match.group(2) in HARMLESS_PROCESS_ENTRIES:
        return False
    try:
        return thread_group(int(match.group(1))) != caller_tgid
    except OSError:
        return True  # gone, or not ours to look at


def allowed_prefixes(config: EnclaveConfig) -> tuple[tuple[str, ...], frozenset[str]]:
    """Allowed directories (as prefixes ending in '/') and allowed single files."""
    dirs = tuple(a if a.endswith("/") else a + "/" for a in config.allowed
                 if a.endswith("/") or os.path.isdir(a))
    files = frozenset(a for a in config.allowed if not a.endswith("/") and not os.path.isdir(a))
    return dirs, files


def kill_descendants() -> None:
    """SIGKILL every process left under this (subreaper) process, until none is left."""
    me = str(os.getpid())
    while True:
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[1].decode() == me:
                found = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry), signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        if not found:
            return


class IdentityPolicy:
    """Where, by host path, the program may open files it may write (no view to decide by
    mount), plus the host's /dev/shm, which stands in for the view's own; the host's /proc
    stands in for the view's /proc read-only. The supervisor opens with its own rights,
    which here are root's on the host's files: a write to /proc/sys/kernel/core_pattern or
    an open of /dev/sda would be the host's, so only the harmless device nodes are served."""

    PRIVATE = ("/dev/shm/",)
    READ_ONLY = ("/proc/",)
    DEVICES = frozenset(f"/dev/{name}" for name in (
        "null", "zero", "full", "random", "urandom", "tty", "ptmx"))
    DEVICE_DIRS = ("/dev/pts/",)

    def __init__(self, config: EnclaveConfig) -> None:
        self.dirs, self.files = allowed_prefixes(config)

    def allows(self, path: str) -> bool:
        """Whether the program may write `path`."""
        return (path in self.files or path.startswith(self.dirs)
                or path.startswith(self.PRIVATE))

    def allows_reading(self, path: str) -> bool:
        """Whether `path`, neither trusted nor a device, may be read."""
        return self.allows(path) or path.startswith(self.READ_ONLY)

    def allows_device(self, path: str) -> bool:
        return path in self.DEVICES or path.startswith(self.DEVICE_DIRS)

    def allows_below(self, directory: str) -> bool:
        """Whether everything beneath `directory` is allowed (not just single files)."""
        inside = directory.rstrip("/") + "/"
        return inside.startswith(self.dirs) or inside.startswith(self.PRIVATE)
