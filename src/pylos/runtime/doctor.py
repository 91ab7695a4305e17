"""What this kernel gives pylos, like Gramine's `is-sgx-available`: one probe per feature,
each with the fix. `pylos doctor` exits with the bitmask of the missing features' bits."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass

from pylos.runtime.syscalls.table import SYSCALLS

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@dataclass(frozen=True)
class Feature:
    bit: int
    name: str
    probe: Callable[[], bool]
    fix: str


def _kernel_at_least(major: int, minor: int) -> bool:
    release = platform.release().split("-")[0].split(".")
    try:
        return (int(release[0]), int(release[1])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def _seccomp_listener_flags() -> bool:
    # With a NULL program, supported flags fail with EFAULT, unsupported ones with EINVAL.
    flags = 8 | 32  # NEW_LISTENER | WAIT_KILLABLE_RECV
    result = _libc.syscall(SYSCALLS["seccomp"], 1, flags, None)
    return result < 0 and ctypes.get_errno() == errno.EFAULT


def _namespaces() -> bool:
    from pylos.runtime.namespaces import namespaces_available

    return not namespaces_available()


def _openat2() -> bool:
    how = (ctypes.c_uint64 * 3)(0, 0, 0)
    result = _libc.syscall(SYSCALLS["openat2"], -1, b"", ctypes.byref(how), 24)
    return result < 0 and ctypes.get_errno() != errno.ENOSYS


def _memfd() -> bool:
    try:
        os.close(os.memfd_create("pylos-probe", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING))
        return True
    except OSError:
        return False


FEATURES = (
    Feature(0x1, "seccomp user notification with WAIT_KILLABLE_RECV", _seccomp_listener_flags,
            "needs Linux >= 5.19 with CONFIG_SECCOMP_FILTER; inside a container, allow the "
            "seccomp() system call"),
    Feature(0x2, "seccomp ADDFD with SEND (atomic fd injection)",
            lambda: _kernel_at_least(5, 14), "needs Linux >= 5.14"),
    Feature(0x4, "user, mount, PID and UTS namespaces, and a view built in them", _namespaces,
            "enable unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1; on "
            "Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0; in containers allow "
            "unshare/clone of namespaces"),
    Feature(0x8, "openat2 with RESOLVE_IN_ROOT", _openat2, "needs Linux >= 5.6"),
    Feature(0x10, "sealed memfd", _memfd, "needs Linux >= 3.17 with CONFIG_MEMFD_CREATE"),
)


def check() -> list[tuple[Feature, bool]]:
    return [(feature, feature.probe()) for feature in FEATURES]


def missing_features() -> list[str]:
    return [f"{feature.name} ({feature.fix})" for feature, ok in check() if not ok]
