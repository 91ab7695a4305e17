"""The file policy of the manifest, decided on what was actually opened (fstat), not on names.

- trusted files (`sgx.trusted_files`): identified by (device, inode) of the host file; opened
  read-only; verified against the manifest's SHA-256 before the first byte is served; what the
  program receives is a sealed memfd holding the verified bytes, so a host file changed after
  verification is never seen (each open gets its own open file description and offset);
- allowed files: anything on a read-write mount (allowed directories and files are the only
  read-write binds in the view), on tmpfs mounts and in the enclave's own /proc;
- directories and the view's device nodes are always openable;
- anything else is refused (`sgx.file_check_policy = "strict"`) or allowed with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import resource
import stat
from collections import OrderedDict
from collections.abc import Callable

from pylos.hashing import FileKey
from pylos.runtime.identity import IdentityPolicy
from pylos.runtime.target import RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, mount_id, openat2
from pylos.typing_compat import NamedTuple

SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


class PolicyError(Exception):
    """An open or exec the policy refuses: errno for the program, message for the log."""

    def __init__(self, err: int, message: str, level: str = "error") -> None:
        super().__init__(message)
        self.errno = err
        self.level = level


COPY_BUDGET = 512 << 20  # bytes of verified copies the supervisor keeps
SPARE_DESCRIPTORS = 256  # of its open-files limit, for everything but copies
HASH_IN_ONE_READ = 1 << 20  # a copy up to this size is hashed from one read


class Admitted(NamedTuple):
    fd: int
    verdict: str


class Verified(NamedTuple):
    memfd: int
    size: int


class UnionRoot:
    """A union root (`fs.root.type = "union"`): the overlay's mount and its upper layer.

    A file of the overlay is the enclave's own when its upper layer has it (made or changed
    in this run); otherwise it is the host file below, trusted by its path like any other.
    Asked after the file was opened: an upper copy made meanwhile is read through the same
    descriptor (overlayfs follows copy-ups), so a trusted file changed by the program fails
    its hash check, never passes unverified."""

    def __init__(self, mount_id: int, upper_fd: int) -> None:
        self.mount_id = mount_id
        self.upper_fd = upper_fd

    def holds(self, fd: int) -> bool:
        return mount_id(fd) == self.mount_id

    def in_upper(self, fd: int) -> bool:
        path = os.readlink(f"/proc/self/fd/{fd}").lstrip("/")
        if not path:
            return True  # the root directory itself
        try:
            found = openat2(self.upper_fd, path.encode(), os.O_PATH | os.O_NOFOLLOW
                            | os.O_CLOEXEC, 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
        except OSError:
            return False
        try:
            st = os.fstat(found)
            return not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)  # a whiteout: deleted
        finally:
            os.close(found)


class VerifiedCopies:
    """Sealed verified copies (memfds) by key, least recently used first, bounded: beyond
    `budget` bytes or `max_copies` descriptors (a program may read 100 000 distinct trusted
    files), the oldest are closed, to be made and verified again when next needed."""

    def __init__(self, budget: int, max_copies: int) -> None:
        self._copies: OrderedDict[object, Verified] = OrderedDict()
        self.held = 0  # bytes
        self.budget, self.max_copies = budget, max_copies

    def __len__(self) -> int:
        return len(self._copies)

    def __contains__(self, key: object) -> bool:
        return key in self._copies

    def get(self, key: object) -> Verified | None:
        verified = self._copies.get(key)
        if verified is not None:
            self._copies.move_to_end(key)
        return verified

    def put(self, key: object, verified: Verified) -> None:
        """Keep `verified` (the newest); close the oldest beyond the bounds."""
        self._copies[key] = verified
        self.held += verified.size
        while (self.held > self.budget or len(self._copies) > self.max_copies) and len(
                self._copies) > 1:
            _, old = self._copies.popitem(last=False)
            os.close(old.memfd)
            self.held -= old.size

    def close(self) -> None:
        for verified in self._copies.values():
            os.close(verified.memfd)
        self._copies.clear()
        self.held = 0


class TrustedFiles:
    """Trusted host files by inode, and their verified, sealed in-memory copies.

    The copies are bounded (`VerifiedCopies`); a program's own descriptor of a closed copy
    keeps its bytes (the copy's inode stays known as verified). A copy is used by the handler
    that asked for it, before any other copy is asked for, so none is closed under its user.
    """

    def __init__(self, expected: dict[str, str], log: Callable[[str, str], None],
                 host_path_of: Callable[[str], str | None] = lambda _path: None,
                 decrypt: Callable[[int, str], bytes | None] | None = None,
                 union: UnionRoot | None = None, budget: int = COPY_BUDGET,
                 max_copies: int | None = None) -> None:
        self.union = union
        self._expected_by_path = expected
        self._decrypt = decrypt
        self._host_path_of = host_path_of
        self._by_inode: dict[tuple[int, int], tuple[str, str]] | None = None
        self._log = log
        self.bytes_hashed = 0  # this run's, for the log
        self.copies = VerifiedCopies(budget, copies_allowed(SPARE_DESCRIPTORS)
                                     if max_copies is None else max_copies)
        self._known: dict[tuple[int, int], tuple[str, str]] = {}  # inode -> (host, sha256)
        # (device, inode) of the copies staged in the view for exec (runtime/staging.py):
        # verified bytes on a read-only private tmpfs.
        self.staged: set[tuple[int, int]] = set()
        # (device, inode) of the sealed verified copies opens are served: a program's
        # descriptor of one holds verified bytes (execveat(fd, "", AT_EMPTY_PATH) may run it)
        self.copy_inodes: set[tuple[int, int]] = set()
        # Mount IDs of the verified view's binds: their files were verified by its server.
        self.verified_mounts: set[int] = set()

    def lookup(self, st: os.stat_result, fd: int | None = None) -> tuple[str, str] | None:
        """(host path, sha256) of the trusted file with this inode, if it is one.

        Known inodes are answered from memory (the hash check on the bytes, not this lookup,
        is what catches a changed file). Else, with the opened `fd`: its canonical in-view
        path, mapped to the host by the mount table, is a trusted path naming this very
        inode. Otherwise (the manifest spells the path another way, e.g. through a symlinked
        directory) all trusted files are indexed by inode once.
        """
        inode = (st.st_dev, st.st_ino)
        if fd is not None and self.union is not None and self.union.holds(fd):
            return None if self.union.in_upper(fd) else self.by_path(fd)
        if fd is not None and self.verified_mounts and mount_id(fd) in self.verified_mounts:
            return self.in_verified_view(fd)
        known = self._known.get(inode)
        if known is not None:
            return known
        if fd is not None:
            view_path = os.readlink(f"/proc/self/fd/{fd}")
            host = self._host_path_of(view_path)
            digest = self._expected_by_path.get(host) if host else None
            if digest is not None:
                try:
                    found = os.stat(host)
                except OSError:
                    found = None
                if found is not None and (found.st_dev, found.st_ino) == inode:
                    self._known[inode] = (host, digest)
                    return host, digest
        if self._by_inode is None:
            # Built on first need: stat-ing thousands of trusted files costs tens of ms.
            self._by_inode = {}
            for path, digest in self._expected_by_path.items():
                try:
                    host = os.stat(path)
                except OSError:
                    continue  # a missing trusted file simply cannot be opened
                self._by_inode.setdefault((host.st_dev, host.st_ino), (path, digest))
        return self._by_inode.get(inode)

    def by_path(self, fd: int) -> tuple[str, str] | None:
        """(host path, sha256) of the trusted file whose host path the mount table gives for
        `fd`'s place in the view, by path alone: for files whose inodes are not the host's
        (a union root's image below the overlay, the verified view); the hash check decides."""
        host = self._host_path_of(os.readlink(f"/proc/self/fd/{fd}"))
        digest = self._expected_by_path.get(host) if host else None
        return (host, digest) if host and digest else None

    def in_verified_view(self, fd: int) -> tuple[str, str] | None:
        """(host path, sha256) of a file of the verified view (runtime/fs/verified.py): by its
        path, or the host inode that path names (the manifest may spell it through a
        symlinked directory)."""
        host = self._host_path_of(os.readlink(f"/proc/self/fd/{fd}"))
        if not host:
            return None
        digest = self._expected_by_path.get(host)
        if digest is not None:
            return host, digest
        try:
            return self.lookup(os.stat(host))
        except OSError:
            return None

    def has_path(self, host_path: str) -> bool:
        return host_path in self._expected_by_path

    def verified_copy(self, fd: int, host_path: str, expected: str,
                      st: os.stat_result | None = None) -> Verified:
        """A sealed memfd with the file's bytes, after checking them against `expected`."""
        key = FileKey.from_stat(st or os.fstat(fd))
        cached = self.copies.get(key)
        if cached is not None:
            return cached
        plain = self._decrypt(fd, host_path) if self._decrypt is not None else None
        if plain is not None:  # verified as plaintext, served as plaintext
            memfd = os.memfd_create(f"pylos-trusted:{os.path.basename(host_path)}",
                                    os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            try:
                return self._seal_plaintext(memfd, plain, host_path, expected, key)
            except BaseException:
                os.close(memfd)
                raise
        memfd = verified_memfd(fd, host_path, expected, key)
        self.bytes_hashed += key.size
        self._log("debug", f"trusted file '{host_path}' verified ({key.size} bytes)")
        return self._remember(key, Verified(memfd, key.size))

    def _remember(self, key: FileKey, verified: Verified) -> Verified:
        copy = os.fstat(verified.memfd)
        self.copy_inodes.add((copy.st_dev, copy.st_ino))
        self.copies.put(key, verified)
        return verified

    def _seal_plaintext(self, memfd: int, plain: bytes, host_path: str, expected: str,
                        key: FileKey) -> Verified:
        digest = hashlib.sha256(plain).hexdigest()
        self.bytes_hashed += len(plain)
        if digest != expected:
            raise PolicyError(errno.EPERM, f"Hash of trusted file '{host_path}' does not match "
                              f"with the reference hash in manifest (expected {expected}, "
                              f"actual {digest})")
        view = memoryview(plain)
        while view:
            view = view[os.write(memfd, view):]
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, SEALS)
        return self._remember(key, Verified(memfd, len(plain)))


def copies_allowed(spare: int) -> int:
    """How many verified copies (one descriptor each) a process may hold, keeping `spare` of
    its open-files limit for everything else."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else max(16, soft - spare)


def verified_memfd(fd: int, host_path: str, expected: str, key: FileKey) -> int:
    """A sealed memfd holding the bytes of `fd` (the file version `key`), once they hash to
    `expected`; PolicyError (EPERM, Gramine's line) otherwise.

    Hashed from the copy, every run, as Gramine hashes inside the enclave: no cache the host
    could rewrite decides what counts as verified, and the bytes served are the bytes hashed.
    """
    memfd = os.memfd_create(f"pylos-trusted:{os.path.basename(host_path)}",
                            os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        if not _copy_whole(fd, memfd, key):
            raise PolicyError(errno.EPERM, f"Trusted file '{host_path}' changed while it was "
                              "being verified")
        if key.size <= HASH_IN_ONE_READ:  # most trusted files: no file object, no buffer
            digest = hashlib.sha256(os.pread(memfd, key.size, 0)).hexdigest()
        else:  # hashed where it lies: a file object would copy it all once more
            import mmap  # here: only servers verifying large files need it

            with mmap.mmap(memfd, key.size, prot=mmap.PROT_READ) as copy:
                digest = hashlib.sha256(copy).hexdigest()
        if digest != expected:
            raise PolicyError(
                errno.EPERM,
                f"Hash of trusted file '{host_path}' does not match with the reference hash "
                f"in manifest (expected {expected}, actual {digest})",
            )
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(memfd)
        raise
    return memfd


def _writes(flags: int) -> bool:
    """Whether an open with `flags` may change the file."""
    return bool(flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_TRUNC | os.O_APPEND))


def _copy_whole(source: int, memfd: int, key: FileKey) -> bool:
    """Copy `source` (of size key.size) into `memfd`; False if it changed meanwhile."""
    offset = 0
    while offset < key.size:
        sent = os.sendfile(memfd, source, offset, key.size - offset)
        if sent == 0:
            break
        offset += sent
    return FileKey.from_stat(os.fstat(source)) == key and offset == key.size


class FilePolicy:
    def __init__(self, trusted: TrustedFiles, writable_mounts: set[int], private_mounts: set[int],
                 allow_all_but_log: bool, log: Callable[[str, str], None],
                 identity: IdentityPolicy | None = None) -> None:
        self.trusted = trusted
        # Without namespaces (runtime/identity.py): allowed by host path, not by mount.
        self.identity = identity
        self.writable_mounts = writable_mounts
        self.private_mounts = private_mounts
        self.allow_all_but_log = allow_all_but_log
        self._log = log
        self._unknown_copies: dict[FileKey, int] = {}

    def _unknown_copy(self, fd: int, st: os.stat_result) -> int:
        """A sealed memfd of an unknown file's bytes (once per file version)."""
        key = FileKey.from_stat(st)
        memfd = self._unknown_copies.get(key)
        if memfd is None:
            memfd = os.memfd_create("pylos-unknown", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            if not _copy_whole(fd, memfd, key):
                os.close(memfd)
                raise PolicyError(errno.EAGAIN, "an unknown file changed while it was copied")
            fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, SEALS)
            self._unknown_copies[key] = memfd
        return memfd

    def refuse_host_device(self, fd: int, st: os.stat_result, name: str) -> None:
        """Identity mode: raise PolicyError if `fd` is a device node other than the harmless
        ones (namespace mode: the view holds only those)."""
        if self.identity is None or not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            return
        if not self.identity.allows_device(os.readlink(f"/proc/self/fd/{fd}")):
            raise PolicyError(errno.EACCES, f"Disallowing access to device '{name}': only "
                              "/dev/null, zero, full, random, urandom and terminals are served "
                              "without namespaces")

    def admit(self, fd: int, st: os.stat_result, name: str, flags: int) -> Admitted:
        """Decide on an opened fd: the fd to give the program (maybe a verified copy), and the
        verdict in words (for `--trace`).

        Raises PolicyError when the open must fail. `fd` stays owned by the caller.
        """
        mode = st.st_mode
        self.refuse_host_device(fd, st, name)
        if not stat.S_ISREG(mode):
            return Admitted(fd, "not a regular file")  # directories, devices, fifos, sockets
        if (st.st_dev, st.st_ino) in self.trusted.staged:
            if _writes(flags):
                raise PolicyError(errno.EACCES, f"Disallowing write/append to a trusted file "
                                  f"'{name}'")
            return Admitted(fd, "trusted, staged verified copy")  # immutable
        union = self.trusted.union
        on_union = union is not None and union.holds(fd)
        if on_union and union.in_upper(fd):
            return Admitted(fd, "the enclave's own (the union root's upper layer)")
        if self.trusted.verified_mounts and mount_id(fd) in self.trusted.verified_mounts:
            # The view's server served only what the policy lets it: verified trusted bytes,
            # or (allow_all_but_log) a logged unknown file. Its binds are read-only.
            if _writes(flags):
                raise PolicyError(errno.EACCES, f"Disallowing write/append to a trusted file "
                                  f"'{name}'")
            return Admitted(fd, "served by the verified view")
        # Where the kernel actually opened it, as a canonical path in the view.
        entry = self.trusted.by_path(fd) if on_union else self.trusted.lookup(st, fd)
        if entry is not None:
            host_path, expected = entry
            if _writes(flags):
                raise PolicyError(errno.EACCES, f"Disallowing write/append to a trusted file "
                                  f"'{name}'")
            if flags & os.O_PATH:  # reads no byte; a reopen or exec through it is judged again
                return Admitted(fd, "trusted, a path only (O_PATH)")
            return Admitted(self.trusted.verified_copy(fd, host_path, expected, st).memfd,
                            "trusted, verified")
        mnt_id = mount_id(fd)
        if mnt_id in self.writable_mounts:
            return Admitted(fd, "allowed")
        if mnt_id in self.private_mounts:
            return Admitted(fd, "enclave-private (tmpfs, /proc)")
        if self.identity is not None:
            writes = _writes(flags)
            where = os.readlink(f"/proc/self/fd/{fd}")
            if self.identity.allows(where) if writes else self.identity.allows_reading(where):
                return Admitted(fd, "allowed")
        if self.allow_all_but_log:
            self._log("warning", f"Allowing access to unknown file '{name}' due to "
                      "file_check_policy.")
            if not _writes(flags) and not flags & os.O_PATH:
                # Host binds are noexec: a copy, so that an unknown library maps executable
                # (dlopen), as Gramine lets it under this policy.
                return Admitted(self._unknown_copy(fd, st), "unknown, allowed by "
                                "file_check_policy (a copy)")
            return Admitted(fd, "unknown, allowed by file_check_policy")
        raise PolicyError(errno.EACCES, f"Disallowing access to file '{name}'; file is not "
                          "allowed.")
