"""The enclave's /proc as Gramine's describes it: mount tables without host paths.

The view's /proc is the kernel's own procfs of the enclave's PID namespace, so almost every
file already describes the enclave. The mount tables do not: a bind mount's root field is
its host directory (`/home/user/app/data /data ...`) and every source is the host's device.
Opens of `/proc/<pid>/mountinfo` and `/proc/<pid>/mounts` are therefore answered with a
sealed copy in which those fields say `/` and `none`; mount points, types and options stay.
"""

from __future__ import annotations

import fcntl
import os
import re

from pylos.runtime.policy import SEALS

MOUNT_TABLE = re.compile(r"^/proc/(?:\d+|self|thread-self)(?:/task/\d+)?/(mountinfo|mounts)$")


def mount_table(path: str) -> str | None:
    """"mountinfo" or "mounts" when `path` is one of the mount tables, else None."""
    match = MOUNT_TABLE.match(path)
    return match.group(1) if match else None


def without_host_paths(kind: str, data: bytes) -> bytes:
    lines = []
    for line in data.splitlines():
        fields = line.split(b" ")
        if kind == "mounts" and len(fields) >= 4:
            fields[0] = b"none"
        elif kind == "mountinfo" and b"-" in fields[6:]:
            separator = fields.index(b"-", 6)
            fields[3] = b"/"
            if len(fields) > separator + 2:
                fields[separator + 2] = b"none"
        lines.append(b" ".join(fields))
    return b"".join(line + b"\n" for line in lines)


def sanitized_copy(fd: int, kind: str) -> int:
    """A sealed memfd holding the table `fd` reads, without host paths; closes `fd`."""
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    memfd = os.memfd_create(f"pylos-{kind}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(memfd, without_host_paths(kind, b"".join(chunks)))
    os.lseek(memfd, 0, os.SEEK_SET)
    fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, SEALS)
    return memfd
