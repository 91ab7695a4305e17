"""What this kernel gives pylos, like Gramine's `is-sgx-available`: one probe per feature,
each with the fix. `pylos doctor` exits with the bitmask of the missing features' bits."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass

from pylos.runtime.syscalls.table import SYSCALLS

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@dataclass(frozen=True)
class Feature:
    bit: int
    name: str | Callable[[], str]
    probe: Callable[[], bool]
    fix: str | Callable[[], str]
    required: bool = True  # without it pylos runs no enclave at all

    @property
    def label(self) -> str:
        return self.name() if callable(self.name) else self.name

    @property
    def fix_text(self) -> str:
        return self.fix() if callable(self.fix) else self.fix


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


def _user_namespace_fix() -> str:
    from pylos.runtime.namespaces import user_namespace_hint

    hint = user_namespace_hint().strip().removeprefix("(").removesuffix(")")
    return (hint.removeprefix("fix: ") + "; without them pylos runs with identity mounts "
            "(docs/runtime.md), and the test suite cannot run")


def _fuse() -> bool:
    try:
        st = os.stat("/dev/fuse")
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == FUSE_DEV


def _landlock() -> bool:
    from pylos.runtime import landlock

    return landlock.abi() >= landlock.SCOPES_ABI


def _landlock_name() -> str:
    from pylos.runtime import landlock

    version = landlock.abi()
    found = f"ABI {version}" if version else "not available"
    return f"Landlock ABI >= 6, the second wall with its socket and signal scopes ({found})"


FUSE_DEV = (10, 229)

FEATURES = (
    Feature(0x1, "seccomp user notification with WAIT_KILLABLE_RECV", _seccomp_listener_flags,
            "needs Linux >= 5.19 with CONFIG_SECCOMP_FILTER; inside a container, allow the "
            "seccomp() system call"),
    Feature(0x2, "seccomp ADDFD with SEND (atomic fd injection)",
            lambda: _kernel_at_least(5, 14), "needs Linux >= 5.14"),
    Feature(0x4, "user, mount, PID and UTS namespaces, and a view built in them", _namespaces,
            _user_namespace_fix, required=False),
    Feature(0x8, "openat2 with RESOLVE_IN_ROOT", _openat2, "needs Linux >= 5.6"),
    Feature(0x10, "sealed memfd", _memfd, "needs Linux >= 3.17 with CONFIG_MEMFD_CREATE"),
    Feature(0x20, f"Linux >= 5.19 (this is {platform.release()})",
            lambda: _kernel_at_least(5, 19), "upgrade the kernel"),
    Feature(0x40, f"Python >= 3.11 (this is {platform.python_version()})",
            lambda: sys.version_info >= (3, 11), "install Python 3.11 or newer"),
    Feature(0x80, "/dev/fuse, for encrypted mounts and /dev/attestation", _fuse,
            "modprobe fuse; in a container, pass the device (docker run --device /dev/fuse); "
            "fusermount is not needed (pylos mounts in its own user namespace)", required=False),
    Feature(0x100, _landlock_name, _landlock,
            "needs Linux >= 6.12 with CONFIG_SECURITY_LANDLOCK=y and landlock in the lsm= boot "
            "parameter (namespace mode runs without it, with the view as its only wall)",
            required=False),
)


def check() -> list[tuple[Feature, bool]]:
    return [(feature, feature.probe()) for feature in FEATURES]


def missing_features(bits: int | None = None) -> list[str]:
    """What is missing of the features in `bits` (default: those pylos cannot run enclaves
    without), each with its fix."""
    return [f"{feature.label} ({feature.fix_text})" for feature, ok in check()
            if not ok and (feature.required if bits is None else feature.bit & bits)]


# What the test suite needs: enclaves in namespace mode with encrypted mounts.
FOR_TESTS = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80


def notes() -> list[str]:
    """What `pylos doctor` reports besides the features: facts, not failures."""
    cgroup = "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1 or none"
    return [f"cgroup {cgroup}: not needed (limits are rlimits: sgx.enclave_size is RLIMIT_AS)",
            "SGX hardware: not used (pylos simulates the enclave; evidence is marked simulated)"]
