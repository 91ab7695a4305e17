"""The verified view: the manifest's read-only host mounts, served through one FUSE file
system that shows only what the policy lets the program use, so the kernel enforces it.

Each read-only host directory (or file) of the view is a *root* of this file system, named
by its index ("3/x86_64-linux-gnu/libc.so.6" is the file below the fourth root): init binds
`<mount>/3` where it bound the host directory before, so the mount tables show no host path.
What a name shows (decided at lookup, once per name and run; the kernel then caches names,
attributes and pages and asks again only on a miss):

- a trusted file: looked up, its bytes are copied into a sealed memfd and hashed against the
  manifest before the lookup answers; a mismatch answers EPERM with Gramine's log line. Its
  attributes and bytes are those verified, whatever the host does afterwards (changed,
  truncated or removed). Reads are served from the copy, never from the host file;
- a file neither trusted nor allowed: its attributes (it may be looked at: Python finds its
  prefix by stat-ing os.py, as in Gramine), x bits cleared, and every read answers EACCES
  with Gramine's line (`strict`); or its host bytes, logged once (`allow_all_but_log`, as
  Gramine lets them be read and run);
- an allowed file: the name exists (a read-write bind of the host file covers it) and no byte
  is ever served from here, x bits cleared;
- directories, symlinks and other nodes: as on the host (a symlink whose chain leaves the
  view's roots and ends at a trusted file shows that file: Debian's `/etc/alternatives`).

No open, flush or release ever reaches the server (the first open answers ENOSYS): an open of
a file the kernel has cached costs what a native open costs. Nothing here can run that was
not verified (or logged, under `allow_all_but_log`): the binds may be executable, and exec,
`execveat` and `mmap(PROT_EXEC)` map pages that came from a verified copy.

Memory: verified copies beyond `budget` bytes, or beyond `max_copies` (each is a descriptor:
a program reading thousands of small trusted files, like Python's standard library, would
otherwise run the server out of descriptors), are dropped, least recently used first, and
verified again from the host when the kernel asks for their pages again; a file the host
changed since fails that check (EIO and the hash line), so an evicted copy never turns into
host bytes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable

from pylos.hashing import FileKey
from pylos.runtime.channel import Channel, pair, recv_fds, send_fds
from pylos.runtime.fs.fuse import (
    CACHE_SYMLINKS,
    FOPEN_CACHE_DIR,
    FOPEN_KEEP_CACHE,
    Attr,
    Context,
    Driver,
    FuseServer,
)
from pylos.runtime.namespaces import REFUSED, root_index
from pylos.runtime.policy import (
    COPY_BUDGET,
    PolicyError,
    TrustedFiles,
    Verified,
    VerifiedCopies,
    copies_allowed,
    verified_memfd,
)

DAY = 86400.0
SPARE_DESCRIPTORS = 64  # of the server's open-files limit, for everything but copies
MAX_LINKS = 40  # Linux's limit on symlinks followed in one resolution
EXEC_BITS = 0o111
INIT_PID = 1  # the enclave's init, in the mount's PID namespace: it builds the view


class VerifiedFs(Driver):
    attr_timeout = DAY  # nothing here changes unless the server says so
    negative_timeout = DAY
    init_flags = CACHE_SYMLINKS
    opendir_flags = FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR
    no_open = True

    def __init__(self, roots: list[str], trusted: TrustedFiles, expected: dict[str, str],
                 allowed: list[str], allow_all_but_log: bool,
                 view_path_of: Callable[[str], str], log: Callable[[str, str], None],
                 budget: int = COPY_BUDGET, max_copies: int | None = None,
                 mount_points: dict[str, bool] | None = None) -> None:
        self.roots = roots
        self.trusted = trusted
        self.expected = expected
        self.allowed = [a.rstrip("/") for a in allowed]
        self.allow_all_but_log = allow_all_but_log
        self.view_path_of = view_path_of
        self.log = log
        # Mount points shown where the host has nothing (launcher.verified_mount_points):
        # name -> is a directory. Empty and read-only; what is mounted there covers them.
        self.mount_points = mount_points or {}
        self.copies = VerifiedCopies(budget, copies_allowed(SPARE_DESCRIPTORS)
                                     if max_copies is None else max_copies)  # by host path
        self.attrs: dict[str, Attr] = {}  # what each verified file showed, kept after eviction
        self.digests: dict[str, str] = {}  # of each file verified once
        self.aliases: dict[str, str] = {}  # a link out of the roots -> the trusted file shown
        self.unknown_logged: set[str] = set()  # allow_all_but_log: each file once
        self.bytes_hashed = 0

    # --- names ----------------------------------------------------------------------------

    def _host(self, path: str) -> str:
        index, _, rest = path.partition("/")
        try:
            root = self.roots[int(index)]
        except (ValueError, IndexError):
            raise OSError(errno.ENOENT, path) from None
        return f"{root.rstrip('/')}/{rest}" if rest else root

    def _digest(self, host: str, st: os.stat_result) -> tuple[str, str] | None:
        """(manifest path, sha256) when `host` is a trusted file (by path, else by inode)."""
        digest = self.expected.get(host)
        if digest is not None:
            return host, digest
        return self.trusted.lookup(st)

    def _allowed(self, host: str) -> bool:
        return any(host == a or host.startswith(a + "/") for a in self.allowed)

    def getattr(self, ctx: Context, path: str, fh: int | None) -> Attr:
        if not path or path == REFUSED:
            return Attr(stat.S_IFDIR | 0o555, nlink=2)
        if path.startswith(REFUSED + "/"):
            return self._refused(path[len(REFUSED) + 1:].replace("%2F", "/").replace("%25", "%"))
        point = self.mount_points.get(path)
        if point is not None:
            return Attr(stat.S_IFDIR | 0o555, nlink=2) if point else Attr(stat.S_IFREG | 0o444)
        host = self.aliases.get(path) or self._host(path)
        known = self.attrs.get(host)
        if known is not None:
            return known
        is_root = "/" not in path
        st = os.stat(host) if is_root else os.lstat(host)  # a root may be a host symlink
        if stat.S_ISREG(st.st_mode):
            return self._regular(ctx, path, host, st)
        if stat.S_ISLNK(st.st_mode):
            target = self._trusted_target_out_of_roots(host)
            if target is not None:
                self.aliases[path] = target
                return self._regular(ctx, path, target, os.stat(target))
        return _attr(st)

    def _regular(self, ctx: Context, path: str, host: str, st: os.stat_result) -> Attr:
        entry = self._digest(host, st)
        if entry is not None:
            try:
                self._verify(host, entry[1], quiet=ctx.pid == INIT_PID)
            except OSError:
                if ctx.pid != INIT_PID:
                    raise
                # Init binds a root's entries one by one: a device node on a nodev mount (the
                # kernel refuses to open it) tells it to point this one to REFUSED instead,
                # whose lookups say why at each open.
                return _attr(st, mode=stat.S_IFCHR)
            return self.attrs[host]
        if self.allow_all_but_log and not self._allowed(host):
            return _attr(st)  # logged when first read
        # Allowed (a read-write bind covers it) or refused: it may be looked at (Python finds
        # its prefix by stat-ing os.py, as in Gramine), never run, and no byte is served.
        return _attr(st, mode=st.st_mode & ~EXEC_BITS)

    def _refused(self, name: str) -> Attr:
        """The program looks up a trusted file that failed its check at init's lookup (see
        `_regular`): check it again, and say why at each open."""
        host = self._host(name)
        entry = self._digest(host, os.stat(host))
        if entry is None:
            raise OSError(errno.EACCES, name)
        self._verify(host, entry[1])  # a tampered file: Gramine's hash line, EPERM
        self.log("error", f"Trusted file '{host}' changed on the host while the enclave started")
        raise OSError(errno.EPERM, name)

    def _trusted_target_out_of_roots(self, link: str) -> str | None:
        """The trusted file a host symlink chain ends at, when the chain has an absolute
        target (a host path, which the view need not show) or passes through a place outside
        the roots: the kernel could not follow it in the view."""
        current, left_roots = link, False
        for _ in range(MAX_LINKS):
            try:
                target = os.readlink(current)
            except OSError:
                break
            current = os.path.normpath(os.path.join(os.path.dirname(current), target))
            left_roots |= target.startswith("/") or root_index(self.roots, current) is None
        else:
            return None
        try:
            st = os.stat(current)
        except OSError:
            return None
        if not left_roots or not stat.S_ISREG(st.st_mode) or self._digest(current, st) is None:
            return None
        return current

    # --- verified bytes -------------------------------------------------------------------

    def _verify(self, host: str, expected: str, quiet: bool = False) -> int:
        """The sealed verified copy of trusted `host` (made, or re-made after eviction);
        `quiet`: a failure is not logged (init's lookups: the program's open says it)."""
        cached = self.copies.get(host)
        if cached is not None:
            return cached.memfd
        try:
            fd = os.open(host, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if host in self.attrs:  # verified before, gone from the host since
                self.log("error", f"Trusted file '{host}' is gone from the host ({exc.strerror})"
                         " and its verified copy was dropped")
                raise OSError(errno.EIO, host) from None
            raise
        try:
            st = os.fstat(fd)
            key = FileKey.from_stat(st)
            memfd = verified_memfd(fd, host, expected, key)
        except PolicyError as exc:
            if not quiet:
                self.log("error", str(exc))
            raise OSError(errno.EIO if host in self.attrs else exc.errno, host) from None
        finally:
            os.close(fd)
        self.bytes_hashed += key.size
        self.log("debug", f"trusted file '{host}' verified ({key.size} bytes)")
        self.attrs.setdefault(host, _attr(st))
        self.digests[host] = expected
        self.copies.put(host, Verified(memfd, key.size))
        return memfd

    def read_node(self, ctx: Context, path: str, offset: int, size: int) -> bytes:
        if path in self.mount_points:
            return b""
        host = self.aliases.get(path) or self._host(path)
        if host in self.digests:
            return os.pread(self._verify(host, self.digests[host]), size, offset)
        if self._allowed(host):
            raise OSError(errno.EACCES, path)  # covered by its read-write bind
        if not self.allow_all_but_log:
            self.log("error", f"Disallowing access to file '{self.view_path_of(host)}'; file is "
                     "not allowed.")
            raise OSError(errno.EACCES, path)
        if host not in self.unknown_logged:
            self.unknown_logged.add(host)
            self.log("warning", f"Allowing access to unknown file '{self.view_path_of(host)}' "
                     "due to file_check_policy.")
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    # --- the rest -------------------------------------------------------------------------

    def open(self, ctx: Context, path: str, flags: int) -> tuple[int, int]:
        raise OSError(errno.ENOSYS, "open")  # no opens at all: see the module's docstring

    def listdir(self, ctx: Context, path: str) -> list[tuple[str, int]]:
        if not path:
            return [(str(i), stat.S_IFDIR) for i in range(len(self.roots))]
        if path == REFUSED:
            return []
        try:
            with os.scandir(self._host(path)) as entries:
                listed = [(e.name, _entry_mode(e)) for e in entries]
        except FileNotFoundError:
            if path not in self.mount_points:
                raise
            listed = []
        names = {name for name, _ in listed}
        for point, is_dir in self.mount_points.items():
            parent, _, name = point.rpartition("/")
            if parent == path and name not in names:
                listed.append((name, stat.S_IFDIR if is_dir else stat.S_IFREG))
        return listed

    def readlink(self, ctx: Context, path: str) -> bytes:
        return os.readlink(os.fsencode(self._host(path)))

    def statfs(self, ctx: Context) -> tuple[int, int, int, int, int, int, int]:
        st = os.statvfs(self.roots[0] if self.roots else "/")
        return (st.f_blocks, 0, 0, st.f_files, 0, st.f_bsize, st.f_namemax)

    def destroy(self) -> None:
        self.copies.close()


def _entry_mode(entry: os.DirEntry) -> int:
    if entry.is_symlink():
        return stat.S_IFLNK
    if entry.is_dir(follow_symlinks=False):
        return stat.S_IFDIR
    return stat.S_IFREG if entry.is_file(follow_symlinks=False) else 0


def _attr(st: os.stat_result, mode: int | None = None) -> Attr:
    return Attr(st.st_mode if mode is None else mode, st.st_size, st.st_nlink, st.st_uid,
                st.st_gid, st.st_mtime_ns, st.st_ctime_ns, st.st_atime_ns)


class VerifiedView:
    """The supervisor's side of the verified view: its server process, started as soon as
    the enclave's user namespace exists, and given the view's descriptor once init has
    mounted it (its start overlaps init's building of the view)."""

    def __init__(self) -> None:
        self.server_pid: int | None = None
        self._handover: Channel | None = None

    def start(self, namespace_of: int, serve: Callable[[], VerifiedFs],
              log: Callable[[str, str], None], close: list[int]) -> None:
        """Fork the server: in the enclave's user namespace (that of process
        `namespace_of`), so it reads the host with the program's rights, never the host
        privileges of `pylos run`; `serve` makes its driver there. It serves the descriptor
        `serve_mount` hands it, and exits quietly if none comes (the enclave did not start)."""
        from pylos.runtime.fs import become_file_server

        ours, theirs = pair()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for other in (*close, ours.fileno()):
                    os.close(other)
                # the name: for ps, the tests
                become_file_server(parent, namespace_of, b"pylos-view")
                driver = serve()
                _, fds = recv_fds(theirs, 1, 1)
                if fds:
                    FuseServer(fds[0], driver, log, "the verified view").serve()
                code = 0
            except BaseException as exc:
                log("error", f"the verified view's server failed: {exc!r}")
            finally:
                os._exit(code)
        theirs.close()
        self.server_pid, self._handover = pid, ours

    def serve_mount(self, fd: int) -> None:
        """Init has mounted the view (`fd`, closed here): the server serves it from now."""
        assert self._handover is not None
        try:
            send_fds(self._handover, b"V", [fd])
        finally:
            os.close(fd)
            self._handover.close()
            self._handover = None

    def ended_badly(self) -> bool:
        """Whether the server has died other than by its mount going away (then the enclave
        must end: the view would answer nothing more). Reaps it once it has ended."""
        if self.server_pid is None:
            return False
        pid, status = os.waitpid(self.server_pid, os.WNOHANG)
        if pid == 0:
            return False
        self.server_pid = None
        return not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)

    def stop(self) -> None:
        """The enclave has ended: nothing to flush, the server simply goes."""
        if self.server_pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.server_pid, 9)
        os.waitpid(self.server_pid, 0)
        self.server_pid = None
