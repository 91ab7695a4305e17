"""Memory: large anonymous mmaps, and memfds that cannot be executed (handle_memfd_create).

Large anonymous mmaps name `sgx.enclave_size` when the program is about to run out of it.

The limit itself is the kernel's (RLIMIT_AS of every process: an enclave's memory is a fixed
address range). What the kernel does not do is say why an allocation failed. Only anonymous
mmaps of at least `LARGE_MMAP` are trapped (malloc falls back to 1 MiB mmaps when brk fails;
heaps, arenas and thread stacks are that big), so ordinary allocations never reach us; the
decision uses registers and /proc only, so the call is always CONTINUEd and the kernel
enforces the limit.
"""

from __future__ import annotations

import errno
import os

from pylos.runtime.target import read_path
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from pylos.runtime.seccomp import Notification
    from pylos.runtime.supervisor import Supervisor

MAP_ANONYMOUS = 0x20
MAP_TYPE = 0x0F
MAP_TYPES = (0x01, 0x02, 0x03)  # MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE
LARGE_MMAP = 1 << 20
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# No x86_64 address space is this big (2**47, or 2**56 with five-level paging).
ADDRESS_SPACE_MAX = 1 << 56


def handle_brk(sup: Supervisor, n: Notification) -> None:
    """`sys.brk.max_size` (Occlum's `process.default_heap_size`): a break beyond the start of
    the heap plus the limit fails as the kernel fails it, by answering the current break
    (glibc's sbrk then says ENOMEM and malloc falls back to mmap). Registers and /proc only:
    the query (0), shrinking and growth within the limit go on to the kernel."""
    requested = n.args[0]
    start = heap_start_of(n.pid) if requested else None
    if start is None or requested <= start + sup.config.brk_max_size:
        sup.listener.allow(n.id)
        return
    current = heap_end_of(n.pid, start)
    sup.warn_once("brk", "warning", f"the heap reached sys.brk.max_size "
                  f"({sup.config.brk_max_size} bytes): brk refused, malloc uses mmap")
    sup.listener.reply(n.id, current)


def heap_start_of(tid: int) -> int | None:
    """start_brk of `tid`'s process (field 47 of /proc/<tid>/stat)."""
    try:
        with open(f"/proc/{tid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[47 - 3])  # fields after "pid (comm)" start with field 3
    except (OSError, ValueError, IndexError):
        return None


def heap_end_of(tid: int, start: int) -> int:
    """The current break: where the [heap] mapping ends (none yet: the heap's start)."""
    try:
        with open(f"/proc/{tid}/maps", "rb") as maps:
            for line in maps:
                if line.rstrip().endswith(b"[heap]"):
                    return int(line.split(b"-", 1)[1].split(b" ", 1)[0], 16)
    except (OSError, ValueError):
        pass
    return start


def address_space_of(tid: int) -> int | None:
    """Bytes of address space thread `tid`'s process uses (what RLIMIT_AS limits)."""
    try:
        with open(f"/proc/{tid}/statm", "rb") as statm:
            return int(statm.read().split(maxsplit=1)[0]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def fails_regardless(length: int, flags: int, offset: int) -> bool:
    """Whether the kernel refuses this mmap whatever the memory limit (bad mapping type,
    unaligned offset, a length no address space holds): not the enclave size's doing."""
    return ((flags & MAP_TYPE) not in MAP_TYPES or offset % PAGE_SIZE != 0
            or length > ADDRESS_SPACE_MAX)


def handle_large_mmap(sup: Supervisor, n: Notification) -> None:
    length = n.args[1]
    if fails_regardless(length, n.args[3], n.args[5]):
        sup.listener.allow(n.id)  # the kernel's EINVAL or ENOMEM
        return
    in_use = address_space_of(n.pid)
    limit = sup.config.enclave_size
    if in_use is not None and in_use + length > limit:
        sup.out_of_memory = True
        sup.warn_once(f"oom:{n.pid}", "error",
                      f"out of enclave memory: process {n.pid} asked for {length >> 20} MiB "
                      f"with {in_use >> 20} MiB in use (sgx.enclave_size = {limit >> 20} MiB); "
                      "the allocation fails")
    if sup.log.trace:
        sup.trace(n, f"len={length}", "continue")
    sup.listener.allow(n.id)


# memfd_create(2) flags (linux/memfd.h); hugetlb page sizes are bits 26-31 with MFD_HUGETLB.
MFD_CLOEXEC, MFD_ALLOW_SEALING, MFD_HUGETLB, MFD_NOEXEC_SEAL, MFD_EXEC = 1, 2, 4, 8, 0x10
MFD_HUGE_SIZES = 0x3F << 26
MFD_FLAGS = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | MFD_NOEXEC_SEAL | MFD_EXEC
MFD_NAME_MAX = 249  # NAME_MAX minus the "memfd:" prefix


def handle_memfd_create(sup: Supervisor, n: Notification) -> None:
    """memfd_create: made by the supervisor, sealed non-executable, and installed in the caller.

    A memfd is executable by default, and nothing verifies what runs from it: a thread that
    swaps an exec's path for /proc/self/fd/<memfd> after the exec check would run unverified
    code. The kernel's own answer (vm.memfd_noexec = 2) is per PID namespace and needs one;
    so every memfd gets MFD_NOEXEC_SEAL (mode without x bits, F_SEAL_EXEC), and MFD_EXEC is
    refused with EACCES, as that sysctl does. Everything else is the program's memfd.
    """
    flags = n.args[1] & 0xFFFFFFFF
    sizes_ok = flags & MFD_HUGETLB or not flags & MFD_HUGE_SIZES
    if flags & ~(MFD_FLAGS | MFD_HUGE_SIZES) or not sizes_ok or (
            flags & MFD_EXEC and flags & MFD_NOEXEC_SEAL):
        sup.listener.reply(n.id, error=errno.EINVAL)
        return
    try:
        name = read_path(n.pid, n.args[0], limit=MFD_NAME_MAX + 1)
    except OSError as exc:
        err = errno.EINVAL if exc.errno == errno.ENAMETOOLONG else exc.errno or errno.EFAULT
        if sup.listener.id_valid(n.id):
            sup.listener.reply(n.id, error=err)
        return
    if flags & MFD_EXEC:
        sup.log("warning", "Disallowing memfd_create(MFD_EXEC): code in the enclave runs only "
                "from trusted files")
        sup.listener.reply(n.id, error=errno.EACCES)
        return
    try:
        fd = os.memfd_create(os.fsdecode(name), (flags & ~MFD_CLOEXEC) | MFD_NOEXEC_SEAL
                             | os.MFD_CLOEXEC)
    except OSError as exc:
        sup.listener.reply(n.id, error=exc.errno or errno.ENOMEM)
        return
    try:
        sup.listener.reply_fd(n.id, fd, cloexec=bool(flags & MFD_CLOEXEC))
    finally:
        os.close(fd)
