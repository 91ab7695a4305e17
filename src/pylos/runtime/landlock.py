"""Landlock: the kernel's second wall around the program (the confine stage).

The first wall is the view (namespace mode) or the trapped opens (identity mode). Landlock is
an unprivileged LSM that the program's process applies to itself just before its exec; it is
inherited by every process the program starts and cannot be lifted. It stops what the first
wall would let through if it had a hole:

- file system: a ruleset grants, per directory hierarchy, which accesses stay possible
  (read, write, create, remove, rename/link across directories, truncate, execute, device
  ioctls); everything the ruleset handles and no rule grants is refused with EACCES;
- scopes (ABI 6): the program cannot connect to abstract UNIX sockets created outside its
  Landlock domain (host session buses, X11, agents, and the descriptors they could pass),
  nor signal processes outside it. Enclave processes share the domain, so they still talk to
  each other over abstract sockets and signal each other.

Where the kernel offers less than ABI 6, `missing_features()` says what is lost (the launcher
warns once) and the rest is still applied.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterable

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38

# Access rights (linux/landlock.h), with the ABI that introduced them.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
SCOPES_ABI = 6

READ_ONLY = READ_FILE | READ_DIR
ALL = -1  # every right the kernel handles
# Where the program may write: everything but making device nodes (the filter refuses mknod
# of devices too) and executing (what is written there is not verified).
WRITABLE = ~(MAKE_CHAR | MAKE_BLOCK | EXECUTE)

# The view's own /dev (host device nodes bound read-only) and /proc (the enclave's PID
# namespace, /proc/sys read-only): read and write, never create or remove.
DEVICES_AND_PROC = (("/dev", READ_FILE | WRITE_FILE | READ_DIR | TRUNCATE | IOCTL_DEV),
                    ("/dev/shm", WRITABLE), ("/proc", READ_FILE | WRITE_FILE | READ_DIR))
# Identity mode has the host's /dev and /proc: writes to /proc would be writes to the host's
# kernel settings (core_pattern, sysrq-trigger: root's by uid, not by capability), and /dev
# holds every device. Only the harmless devices and terminals stay writable.
_DEVICE_RW = READ_FILE | WRITE_FILE | TRUNCATE
HOST_DEVICES_AND_PROC = (
    ("/dev", READ_DIR), ("/dev/shm", WRITABLE), ("/proc", READ_FILE | READ_DIR),
    *((f"/dev/{name}", _DEVICE_RW) for name in ("null", "zero", "full", "random", "urandom")),
    ("/dev/tty", _DEVICE_RW | IOCTL_DEV), ("/dev/ptmx", _DEVICE_RW | IOCTL_DEV),
    ("/dev/pts", _DEVICE_RW | IOCTL_DEV | READ_DIR))

RULESET_ATTR = struct.Struct("<QQQ")  # handled_access_fs, handled_access_net, scoped
PATH_BENEATH = struct.Struct("<Qi")  # packed: allowed_access u64, parent_fd s32

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is unavailable."""
    version = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0,
                            LANDLOCK_CREATE_RULESET_VERSION)
    return max(int(version), 0)


def missing_features(version: int) -> list[str]:
    """What this kernel's Landlock cannot do that pylos would use, in words."""
    missing = []
    if version == 0:
        return ["Landlock itself (no second kernel wall around the program)"]
    if version < 2:
        missing.append("REFER (ABI 2): renames and links across directories are refused")
    if version < 3:
        missing.append("TRUNCATE (ABI 3): truncation is not confined")
    if version < 5:
        missing.append("IOCTL_DEV (ABI 5): device ioctls are not confined")
    if version < SCOPES_ABI:
        missing.append("scopes (ABI 6): abstract UNIX sockets and signals to the host are "
                       "not blocked")
    return missing


def _check(result: int, what: str) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def confine(rules: Iterable[tuple[str, int]], version: int | None = None) -> None:
    """Landlock the calling process: only `rules` ((path, rights); ALL = every right) keep
    file-system access, and abstract UNIX sockets and signals are scoped to its domain.

    A missing path grants nothing. Rights for a non-directory are cut to file rights.
    """
    version = abi() if version is None else version
    if version == 0:
        raise OSError(errno.ENOSYS, "Landlock is unavailable")
    handled = RIGHTS_BY_ABI[max(v for v in RIGHTS_BY_ABI if v <= version)]
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if version >= SCOPES_ABI else 0
    # Older kernels take the longer struct as long as the fields they lack are zero.
    attr = RULESET_ATTR.pack(handled, 0, scoped)
    ruleset = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, attr, len(attr), 0)
    _check(ruleset, "landlock_create_ruleset")
    try:
        for path, rights in rules:
            allowed = handled & rights
            # No stat: on a FUSE mount (encrypted, /dev/attestation) it would wait for a
            # server that starts only once the program has confined itself.
            try:
                fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except NotADirectoryError:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                allowed &= FILE_RIGHTS
            except OSError:
                continue
            try:
                _check(_libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH,
                                     PATH_BENEATH.pack(allowed, fd), 0),
                       f"landlock_add_rule {path}")
            finally:
                os.close(fd)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
        _check(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
