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
import ctypes
import errno
import os
import signal
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pylos.errors import PylosError

if TYPE_CHECKING:
    from pylos.runtime.config import EnclaveConfig

# Why unshare(CLONE_NEWUSER | ...) fails on hosts that forbid it.
UNAVAILABLE_ERRNOS = (errno.EPERM, errno.EACCES, errno.ENOSPC, errno.EINVAL, errno.EUSERS,
                      errno.ENOSYS)

# Landlock (linux/landlock.h).
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
READ_ONLY = EXECUTE | READ_FILE | READ_DIR
PATH_BENEATH = struct.Struct("<Qi")  # packed: allowed_access u64, parent_fd s32

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


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


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is unavailable."""
    version = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0,
                            LANDLOCK_CREATE_RULESET_VERSION)
    return max(int(version), 0)


def landlock_rules(config: EnclaveConfig) -> list[tuple[str, int]]:
    """(host path, access rights) the program keeps; everything else is out of reach."""
    rules = [(mount.host, READ_ONLY) for mount in [config.root, *config.mounts] if mount.host]
    rules += [(path.rstrip("/") or "/", -1) for path in config.allowed]  # -1: every right
    rules += [("/dev", READ_FILE | WRITE_FILE | READ_DIR | IOCTL_DEV), ("/dev/shm", -1),
              ("/proc", READ_FILE | WRITE_FILE | READ_DIR)]
    return rules


def confine(config: EnclaveConfig) -> None:
    """Landlock the calling process (the program, just before its exec) to the manifest."""
    abi = landlock_abi()
    if abi == 0:
        raise OSError(errno.ENOSYS, "Landlock is unavailable: without namespaces pylos cannot "
                      "confine the program's untrapped file system calls")
    handled = RIGHTS_BY_ABI[max(v for v in RIGHTS_BY_ABI if v <= abi)]
    attr = struct.pack("<Q", handled)
    ruleset = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, attr, len(attr), 0)
    if ruleset < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    try:
        for path, rights in landlock_rules(config):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a missing path grants nothing
            try:
                allowed = handled if rights == -1 else rights & handled
                if not os.path.isdir(f"/proc/self/fd/{fd}"):
                    allowed &= FILE_RIGHTS
                rule = PATH_BENEATH.pack(allowed, fd)
                if _libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH,
                                 rule, 0) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"landlock_add_rule {path}: {os.strerror(err)}")
            finally:
                os.close(fd)
        if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: Landlock requires it
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
        if _libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(ruleset)


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
    mount), plus the host's /proc and /dev/shm, which stand in for the view's own."""

    PRIVATE = ("/proc/", "/dev/shm/")

    def __init__(self, config: EnclaveConfig) -> None:
        self.dirs, self.files = allowed_prefixes(config)

    def allows(self, path: str) -> bool:
        return (path in self.files or path.startswith(self.dirs)
                or path.startswith(self.PRIVATE))

    def allows_below(self, directory: str) -> bool:
        """Whether everything beneath `directory` is allowed (not just single files)."""
        inside = directory.rstrip("/") + "/"
        return inside.startswith(self.dirs) or inside.startswith(self.PRIVATE)
