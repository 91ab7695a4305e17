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
LARGE_MMAP = 1 << 20
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def address_space_of(tid: int) -> int | None:
    """Bytes of address space thread `tid`'s process uses (what RLIMIT_AS limits)."""
    try:
        with open(f"/proc/{tid}/statm", "rb") as statm:
            return int(statm.read().split(maxsplit=1)[0]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def handle_large_mmap(sup: Supervisor, n: Notification) -> None:
    length = n.args[1]
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
