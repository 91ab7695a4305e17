"""Large anonymous mmaps: name `sgx.enclave_size` when the program is about to run out of it.

The limit itself is the kernel's (RLIMIT_AS of every process: an enclave's memory is a fixed
address range). What the kernel does not do is say why an allocation failed. Only anonymous
mmaps of at least `LARGE_MMAP` are trapped (malloc falls back to 1 MiB mmaps when brk fails;
heaps, arenas and thread stacks are that big), so ordinary allocations never reach us; the
decision uses registers and /proc only, so the call is always CONTINUEd and the kernel
enforces the limit.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

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
