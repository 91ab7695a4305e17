"""Reading a trapped program's state from outside: its memory, cwd, fds and namespace pid.

Every read of program memory is followed by NOTIF_ID_VALID before the result is used: TIDs are
reused and a signalled caller may already be elsewhere (docs/formats.md, seccomp).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator

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


# Above this no user address exists (x86_64's user space ends below 2**47, or 2**56 with
# five-level paging): the kernel answers EFAULT, and no file offset could even express it.
USER_ADDRESS_LIMIT = 1 << 63


class IoVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("length", ctypes.c_size_t))


_libc.process_vm_readv.restype = ctypes.c_ssize_t
_libc.process_vm_readv.argtypes = (ctypes.c_int, ctypes.POINTER(IoVec), ctypes.c_ulong,
                                   ctypes.POINTER(IoVec), ctypes.c_ulong, ctypes.c_ulong)


def _read_page(tid: int, address: int, length: int) -> bytes:
    """`length` bytes at `address`, all within one page, read as the program itself could:
    process_vm_readv honours the page's protection (a PROT_NONE page faults, as in
    copy_from_user), which /proc/<tid>/mem, forcing its way in, does not. Only where that
    call is refused (a container's seccomp profile) is /proc/<tid>/mem read instead.

    The thread is named at each read, never through a cached descriptor: a cached one stays
    bound to the address space it was opened on, and a vfork child's is its parent's, which
    lives on after the child execs or exits and its TID is reused.
    """
    buffer = ctypes.create_string_buffer(length)
    local, remote = IoVec(ctypes.addressof(buffer), length), IoVec(address, length)
    got = _libc.process_vm_readv(tid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if got == length:
        return buffer.raw
    err = ctypes.get_errno() if got < 0 else errno.EFAULT
    if err not in (errno.ENOSYS, errno.EPERM):
        raise OSError(err, os.strerror(err))
    fd = os.open(f"/proc/{tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunk = os.pread(fd, length, address)
    except OSError as exc:
        raise OSError(errno.EFAULT, "bad address") from exc
    finally:
        os.close(fd)
    if len(chunk) != length:
        raise OSError(errno.EFAULT, "bad address")
    return chunk


def read_chunks(tid: int, address: int, length: int) -> Iterator[bytes]:
    """Thread `tid`'s memory from `address`, page by page as it is read, so that a caller may
    stop early (a string ends before an unmapped page). Raises OSError(EFAULT) at the first
    page that cannot be read, as copy_from_user fails."""
    if address <= 0 or address + length > USER_ADDRESS_LIMIT:
        raise OSError(errno.EFAULT, "bad address")
    done = 0
    while done < length:
        chunk_len = min(PAGE - (address + done) % PAGE, length - done)
        yield _read_page(tid, address + done, chunk_len)
        done += chunk_len


def read_memory(tid: int, address: int, length: int) -> bytes:
    """`length` bytes of thread `tid`'s memory at `address`; OSError(EFAULT) when any of them
    is not readable by the program."""
    return b"".join(read_chunks(tid, address, length))


def read_path(tid: int, address: int, limit: int = PATH_MAX) -> bytes:
    """A path argument from thread `tid`'s memory, as the kernel's getname() reads it:
    EFAULT for NULL, kernel or unreadable addresses (also a string running into an
    unreadable page), ENAMETOOLONG when no NUL comes within `limit` bytes (PATH_MAX counts
    the NUL)."""
    if address == 0 or address >= USER_ADDRESS_LIMIT:
        raise OSError(errno.EFAULT, "bad address")
    data = b""
    for chunk in read_chunks(tid, address, min(limit, USER_ADDRESS_LIMIT - address)):
        end = chunk.find(b"\0")
        if end >= 0:
            return data + chunk[:end]
        data += chunk
    if len(data) < limit:  # the string ran to the end of user space
        raise OSError(errno.EFAULT, "bad address")
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
