"""Reading a trapped program's state from outside: its memory, cwd, fds and namespace pid.

Every read of program memory is followed by NOTIF_ID_VALID before the result is used: TIDs are
reused and a signalled caller may already be elsewhere (seccomp-notify.md §2.2).
"""

from __future__ import annotations

import ctypes
import errno
import os

from pylos.runtime.syscalls.table import SYSCALLS

PATH_MAX = 4096
PAGE = 4096

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64))


def openat2(dirfd: int, path: bytes, flags: int, mode: int, resolve: int) -> int:
    """openat2(2); raises OSError with the kernel's errno."""
    how = OpenHow(flags, mode, resolve)
    fd = _libc.syscall(SYSCALLS["openat2"], dirfd, path, ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


class StatxMntId(ctypes.Structure):
    # Only the fields up to stx_mnt_id (offset 144) matter; the buffer is the full 256 bytes.
    _fields_ = (("head", ctypes.c_uint8 * 144), ("mnt_id", ctypes.c_uint64),
                ("tail", ctypes.c_uint8 * 104))


STATX_MNT_ID = 0x1000
AT_EMPTY_PATH = 0x1000


def mount_id(fd: int) -> int:
    """The mount ID (system-wide) of the mount an fd lives on."""
    buf = StatxMntId()
    if _libc.syscall(SYSCALLS["statx"], fd, b"", AT_EMPTY_PATH, STATX_MNT_ID,
                     ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return buf.mnt_id


def read_path(tid: int, address: int) -> bytes:
    """A path argument from thread `tid`'s memory.

    `/proc/<tid>/mem` is opened for each read, never cached: a cached descriptor stays bound to
    the address space it was opened on, and a vfork child's is its parent's, which lives on
    after the child execs or exits and its TID is reused — a cached read would then return
    another process's bytes.
    """
    fd = os.open(f"/proc/{tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_c_string(fd, address)
    finally:
        os.close(fd)


def read_c_string(fd: int, address: int, limit: int = PATH_MAX) -> bytes:
    """A NUL-terminated string from the memory behind `fd` (a `/proc/<tid>/mem`), read page
    by page (a read crossing into an unmapped page fails)."""
    if address == 0:
        raise OSError(errno.EFAULT, "NULL pointer")
    data = b""
    while len(data) < limit:
        chunk_len = min(PAGE - (address + len(data)) % PAGE, limit - len(data))
        try:
            chunk = os.pread(fd, chunk_len, address + len(data))
        except OSError as exc:
            raise OSError(errno.EFAULT, "bad address") from exc
        if not chunk:
            raise OSError(errno.EFAULT, "bad address")
        end = chunk.find(b"\0")
        if end >= 0:
            return data + chunk[:end]
        data += chunk
    raise OSError(errno.ENAMETOOLONG, "path too long")


def namespace_pid(tid: int, field: bytes = b"NStgid:") -> int:
    """The process (NStgid) or thread (NSpid) id of host `tid` as the program sees it."""
    with open(f"/proc/{tid}/status", "rb") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[-1])
    raise OSError(errno.ESRCH, f"no {field.decode()}")


def thread_group(tid: int) -> int:
    with open(f"/proc/{tid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"Tgid:"):
                return int(line.split()[1])
    raise OSError(errno.ESRCH, "no Tgid")
