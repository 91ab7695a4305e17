"""Exec staging: what the kernel maps on exec is a verified copy, never the host file.

The kernel opens an executable, its ELF interpreter and a script's `#!` interpreter itself, by
path, after the supervisor has let the exec proceed; it also pages them in later from the
file. So verifying the host file is not enough: the host could change it afterwards. Instead:

- every host bind in the view is mounted `noexec`: the kernel refuses to exec (or map as an
  interpreter) anything on them;
- when an exec is trapped, the supervisor verifies the file and any interpreters, then asks
  init (the one process inside the enclave's mount namespace that may mount) to *stage* each
  verified copy: write it into a private tmpfs and bind it, read-only and executable, over the
  file's path in the view. The exec then proceeds and the kernel maps the staged bytes;
  later execs of the same path find the staged inode and need no hashing.

A racing thread that rewrites the exec's path after the check can only point it at another
staged (verified) file: host binds, tmpfs mounts and /dev/shm are noexec, and memfds are
sealed non-executable (syscalls/memory.py), so the kernel refuses everything else. The
staging tmpfs is visible read-only at `/dev/.pylos-exec`; init writes into it through a
descriptor of a detached read-write mount of the same tmpfs, which no path in the view names.
"""

from __future__ import annotations

import errno
import marshal
import os
from collections.abc import Callable

from pylos.errors import PylosError
from pylos.runtime.channel import Channel, recv_fds, send_fds
from pylos.runtime.namespaces import MS_BIND, MS_NODEV, MS_NOSUID, MS_RDONLY, MS_REMOUNT, mount

STAGING_DIR = "/dev/.pylos-exec"
MOUNT_NESTED = {"mount": "nested"}  # the one request that is not a path to stage
REQUEST_TIMEOUT = 30.0


def copy_fd(source: int, target: int) -> None:
    """Copy the whole content of `source` (from offset 0) into `target`."""
    size = os.fstat(source).st_size
    offset = 0
    while offset < size:
        sent = os.sendfile(target, source, offset, size - offset)
        if sent == 0:
            break
        offset += sent


class StagingArea:
    """Init's side: stages copies into the tmpfs and binds them over view paths; and, once,
    mounts the nested FUSE mounts (`fs.mount_all`), the other thing only init may mount."""

    def __init__(self, rw_dirfd: int,
                 mount_nested: Callable[[], list[int]] | None = None) -> None:
        self.rw_dirfd = rw_dirfd
        self.count = 0
        self.mount_nested = mount_nested

    def stage(self, path: str, content_fd: int) -> tuple[int, int]:
        """Bind a read-only executable copy of `content_fd` over `path`; its (dev, inode)."""
        name = str(self.count)
        self.count += 1
        fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o555,
                     dir_fd=self.rw_dirfd)
        try:
            copy_fd(content_fd, fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        mount(f"{STAGING_DIR}/{name}", path, None, MS_BIND)
        mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        return st.st_dev, st.st_ino

    def serve_one(self, channel: Channel) -> bool:
        """Answer one request from the supervisor; False when the supervisor has gone."""
        try:
            message, fds = recv_fds(channel, 8192, 1)
        except OSError:
            return False
        if not message:
            return False
        try:
            request = marshal.loads(message)
            try:
                if request == MOUNT_NESTED:
                    reply = {"mounted": self.mount_nested() if self.mount_nested else []}
                else:
                    reply = {"staged": self.stage(request, fds[0])}
            except OSError as exc:
                reply = {"error": f"{exc.strerror or exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        channel.send(marshal.dumps(reply))
        return True


class Stager:
    """The supervisor's side: one request at a time, answered by init."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        channel.settimeout(REQUEST_TIMEOUT)

    def mount_nested(self) -> list[int]:
        """Ask init to mount the nested FUSE mounts (their servers run): their mount IDs."""
        self.channel.send(marshal.dumps(MOUNT_NESTED))
        reply = marshal.loads(self.channel.recv(8192) or marshal.dumps({"error": "init gone"}))
        if "error" in reply:
            raise PylosError(f"mounting the nested encrypted mounts: {reply['error']}")
        return list(reply["mounted"])

    def stage(self, path: str, content_fd: int) -> tuple[int, int]:
        """Ask init to stage `content_fd` at the view path `path`; OSError when it cannot."""
        send_fds(self.channel, marshal.dumps(path), [content_fd])
        reply = marshal.loads(self.channel.recv(8192) or marshal.dumps({"error": "init gone"}))
        if "error" in reply:
            raise OSError(errno.EACCES, f"staging '{path}' for exec: {reply['error']}")
        return tuple(reply["staged"])
