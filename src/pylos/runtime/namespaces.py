"""The enclave's private view of the file system, built with Linux namespaces.

A user namespace (the program's uid/gid map to the invoking user's), a mount namespace and a
PID namespace. The new root is a tmpfs skeleton holding only what the manifest mounts: host
files and directories bind-mounted read-only (allowed files read-write), tmpfs mounts, a
minimal /dev and the enclave's own /proc. Paths, the ELF interpreter, cwd, dirfds and metadata
calls then work natively; the supervisor only has to police opens and execs.

Mount points missing inside a bind-mounted host directory are never created on the host: the
directory is "exploded" into a tmpfs whose entries are bind-mounted one by one, and the mount
point is created in the tmpfs.
"""

from __future__ import annotations

import ctypes
import os
import re
import stat
from collections.abc import Callable

from pylos.errors import PylosError
from pylos.runtime.syscalls.table import SYSCALLS
from pylos.typing_compat import NamedTuple

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000

MS_RDONLY = 0x1
# Where the verified view (runtime/fs/verified.py) is mounted while the view is built; then
# detached, so that only its binds name it.
VERIFIED_MOUNT_POINT = "/.pylos-verified"
# Where files the verified view refuses point to, when init bound them one by one (a root's
# entries): a lookup there is refused with Gramine's log line, at each open.
REFUSED_DIR = "/dev/.pylos-refused"
REFUSED = "refused"  # that directory's name in the verified view


def refused_name(name: str) -> str:
    """The one-component name, below REFUSED, of the verified view's file `name`."""
    return name.replace("%", "%25").replace("/", "%2F")
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
# Entries of /proc that write to the host kernel (bind-mounted read-only over themselves).
KERNEL_KNOBS = ("sys", "sysrq-trigger", "irq", "bus")
# The part of /sys Gramine provides (CPU and NUMA topology: online/possible CPUs, per-CPU
# topology and caches, node cpumaps), bound read-only from the host's sysfs.
SYS_SUBSET = ("/sys/devices/system/cpu", "/sys/devices/system/node")
LOADER = "/lib64/ld-linux-x86-64.so.2"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)  # noqa: E731
    _check(_libc.mount(enc(source), target.encode(), enc(fstype), flags, enc(data)),
           f"mount {source or fstype} on {target}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def enter_user_namespace(inside_uid: int, inside_gid: int,
                         map_range: Callable[[], bool] | None = None) -> None:
    """New user, mount, PID and UTS namespaces; the invoking user appears as (inside_uid,
    inside_gid).

    UTS: the enclave's root may call sethostname; without its own UTS namespace that would
    rename the host (the hostname belongs to the UTS namespace, not to /proc/sys).
    Gramine lets root chown to any ids, switch ids and set groups. Where the host allows it
    (pylos run by root), the enclave's other ids are a range of host ids no host user has;
    otherwise only the invoking user's own id exists. Only a process with CAP_SETUID over
    the parent namespace may map a range: `map_range` asks one that stays outside (the
    supervisor: `map_id_range`) to map this process once it has unshared, and says whether
    it did.
    """
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS)
    if map_range is not None and map_range():
        return
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    _write_id_map("/proc/self/uid_map", f"{inside_uid} {uid} 1")
    _write_id_map("/proc/self/gid_map", f"{inside_gid} {gid} 1")


def map_id_range(pid: int, inside_uid: int, inside_gid: int) -> bool:
    """Map the new user namespace of process `pid` (which this process's user created): its
    (inside_uid, inside_gid) are ours, its other ids a range no host user has; False, with
    nothing written, where we may not (not root in the initial user namespace)."""
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0 or not _in_initial_user_namespace():
        return False
    try:
        _write_id_map(f"/proc/{pid}/uid_map", id_range_map(inside_uid, uid))
        _write_id_map(f"/proc/{pid}/gid_map", id_range_map(inside_gid, gid))
    except OSError:
        return False  # the caller then maps its one id itself
    return True


def _in_initial_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


# The enclave's ids other than loader.uid/gid, inside 0..65535, are host ids ENCLAVE_IDS + id:
# far above what user databases hand out (Debian's subordinate ranges start at 100000 and
# grow by 65536), so a file an enclave chowns on an allowed path belongs to no host user.
ENCLAVE_IDS = 0x7FF00000
ENCLAVE_ID_COUNT = 65536


def join_user_namespace(pid: int) -> None:
    """Give up the supervisor's host privileges before serving the program: join the
    enclave's user namespace (that of `pid`, the namespace creator).

    The supervisor opens files *for* the program; with host capabilities (pylos run as root)
    it would open what the program itself may not: files of other host users (DAC override),
    /proc/<init>/mem, /proc/kcore. Inside the enclave's user namespace its credentials are
    the program's, so an emulated open succeeds exactly when a native one would. Joining
    needs a single-threaded process: this runs before any helper thread exists.
    """
    fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWUSER) != 0:
            err = ctypes.get_errno()
            raise PylosError("the supervisor cannot drop its host privileges (joining the "
                             f"enclave's user namespace: {os.strerror(err)})")
    finally:
        os.close(fd)


def id_range_map(inside: int, outside: int) -> str:
    """uid_map/gid_map lines: `inside` is the invoking user's `outside`; the other ids of
    0..65535 are host ids ENCLAVE_IDS + id (ranges around `inside`, which may exceed them)."""
    lines = [f"{inside} {outside} 1"]
    below = min(inside, ENCLAVE_ID_COUNT)
    if below:
        lines.append(f"0 {ENCLAVE_IDS} {below}")
    if inside + 1 < ENCLAVE_ID_COUNT:
        lines.append(f"{inside + 1} {ENCLAVE_IDS + inside + 1} {ENCLAVE_ID_COUNT - inside - 1}")
    return "\n".join(lines) + "\n"


def _write_id_map(path: str, lines: str) -> None:
    with open(path, "w") as f:
        f.write(lines)


def root_index(roots: list[str], host: str) -> str | None:
    """The view's name of host path `host` ("3/sub/file"), by the deepest root holding it."""
    best = -1
    for index, root in enumerate(roots):
        if (host == root or host.startswith(root.rstrip("/") + "/")) and (
                best < 0 or len(root) > len(roots[best])):
            best = index
    if best < 0:
        return None
    rest = host[len(roots[best].rstrip("/")):] if host != roots[best] else ""
    return f"{best}{rest}"


class Bind(NamedTuple):
    host: str
    path: str
    writable: bool


class ViewPlan:
    """What the view contains, in mount order (shallow paths first). (Plain classes here
    and below: generating dataclasses' methods costs each `pylos run` start-up time.)"""

    def __init__(self, root_host: str | None, root_writable: bool, root_union: bool = False,
                 binds: list[Bind | str] | None = None, loader_search: list[str] | None = None,
                 synthesized: dict[str, bytes] | None = None,
                 devices: dict[str, str] | None = None, verified_roots: list[str] | None = None,
                 exec_allowed: bool = False,
                 verified_mount_points: dict[str, bool] | None = None) -> None:
        self.root_host = root_host
        self.root_writable = root_writable
        self.root_union = root_union  # root_host below, a layer in enclave memory above
        self.binds = binds or []  # in mount order; a str entry is a tmpfs path
        self.loader_search = loader_search or []
        self.synthesized = synthesized or {}  # path -> content (read-only)
        self.devices = devices or {}  # path -> host device node (dev:)
        # The verified view (runtime/fs/verified.py): the host paths it shows, which every
        # read-only bind comes from (None: host binds, noexec, every open trapped).
        self.verified_roots = verified_roots
        # ...and the mount points it shows in them (launcher.verified_mount_points)
        self.verified_mount_points = verified_mount_points or {}
        self.exec_allowed = exec_allowed  # allow_all_but_log: allowed files may run (Gramine)


class ViewResult:
    """Mount IDs the supervisor's policy needs (mount IDs are system-wide): read-write binds
    (allowed files) and the enclave's private mounts (tmpfs, its own /proc)."""

    def __init__(self) -> None:
        self.writable_mount_ids: list[int] = []
        self.private_mount_ids: list[int] = []
        self.staging_dirfd = -1  # init's only: the writable exec staging tmpfs
        self.union_mount_id = -1  # a union root's overlay mount
        self.union_upper_fd = -1  # its upper layer (O_PATH), for the supervisor's policy
        self.verified_mount_ids: list[int] = []  # binds of the verified view


class VerifiedMount(NamedTuple):
    """The verified view's FUSE descriptor (opened in the enclave's user namespace), the
    mount's owner, and how to hand the descriptor to the supervisor, which serves it."""

    fd: int
    uid: int
    gid: int
    announce: Callable[[int], None]


class ViewBuilder:
    def __init__(self, newroot: str, verified_roots: list[str] | None = None,
                 exec_allowed: bool = False) -> None:
        self.newroot = newroot
        self.verified_roots = verified_roots
        self.exec_allowed = exec_allowed
        self.host_binds: dict[str, str] = {}  # enclave dir path -> host dir (explodable)
        self.skeletons: list[str] = []  # exploded directories: tmpfs, read-only once built
        self.result = ViewResult()

    def real(self, path: str) -> str:
        return self.newroot + path if path != "/" else self.newroot

    def bind(self, host: str, path: str, writable: bool) -> None:
        try:
            st = os.stat(host)
        except OSError as exc:
            raise PylosError(f"cannot mount '{host}' at '{path}': {exc.strerror}") from None
        is_dir = stat.S_ISDIR(st.st_mode)
        self.ensure(path, is_dir)
        target = self.real(path)
        verified = not writable and self.verified_roots is not None
        if verified:
            assert self.verified_roots is not None
            name = root_index(self.verified_roots, host)
            if name is None:
                raise PylosError(f"the verified view does not show '{host}' (mounted at "
                                 f"'{path}')")
            source = f"{self.real(VERIFIED_MOUNT_POINT)}/{name}"
            if stat.S_ISCHR(os.lstat(source).st_mode):  # refused: see REFUSED_DIR
                os.unlink(target)
                os.symlink(f"{REFUSED_DIR}/{refused_name(name)}", target)
                return
            mount(source, target, None, MS_BIND)
            # Executable: the view's server serves verified bytes (or logged unknown ones).
            self.restrict(target, readonly=True, noexec=False, inherited=False)
            self.result.verified_mount_ids.append(_mount_id_of(target))
        else:
            mount(host, target, None, MS_BIND | MS_REC)
            # noexec: the kernel may only exec verified bytes: the verified view's, or
            # copies staged for the trapped exec (runtime/staging.py).
            for mounted in _mounts_at_or_below(target):
                self.restrict(mounted, readonly=not writable,
                              noexec=not (writable and self.exec_allowed))
        if is_dir:
            self.host_binds[path] = host
        if writable:
            self.result.writable_mount_ids.append(_mount_id_of(target))

    def tmpfs(self, path: str) -> None:
        self.ensure(path, True)
        # noexec: nothing the program writes runs (only trusted files run, from their staged
        # verified copies), not even by swapping an exec's path after its check.
        mount("tmpfs", self.real(path), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777")
        self.host_binds.pop(path, None)
        self.result.private_mount_ids.append(_mount_id_of(self.real(path)))

    @staticmethod
    def restrict(target: str, readonly: bool = True, noexec: bool = False,
                 inherited: bool = True) -> None:
        """Remount the bind at `target` nosuid, and read-only and/or noexec. `inherited`: a
        bind of a host mount, whose flags the user namespace may have locked; not inherited,
        a bind of the verified view, mounted here (nosuid, nodev, nothing locked)."""
        # nosuid always: a set-id file on the host never gains privileges inside.
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (MS_RDONLY if readonly else 0) | (
            MS_NOEXEC if noexec else 0)
        if not inherited:
            # No statvfs: on the view it would be a round trip to its server, at each bind.
            mount(None, target, None, flags | MS_NODEV)
            return
        # Flags locked by the user namespace (nosuid, nodev, noexec, ro) must be kept.
        st = os.statvfs(target)
        for flag, bit in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
                          (os.ST_NOEXEC, MS_NOEXEC), (os.ST_RDONLY, MS_RDONLY)):
            if st.f_flag & flag:
                flags |= bit
        mount(None, target, None, flags)

    def ensure(self, path: str, is_dir: bool) -> None:
        """Make `path` exist in the view as a directory or a file, never touching the host."""
        parent = os.path.dirname(path)
        if path != "/":
            self.ensure(parent, True)
        real = self.real(path)
        if os.path.lexists(real):
            if os.path.islink(real):
                raise PylosError(f"mount point '{path}' is a symbolic link in the enclave view")
            return
        owner = self._host_bind_owning(parent)
        if owner is not None:
            self.explode(owner)
        if is_dir:
            os.mkdir(real, 0o755)
        else:
            os.close(os.open(real, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))

    def _host_bind_owning(self, path: str) -> str | None:
        """The bind-mounted host directory that `path` lies in, if any (deepest first)."""
        candidate = path
        while True:
            if candidate in self.host_binds:
                return candidate
            if candidate == "/":
                return None
            candidate = os.path.dirname(candidate)

    def explode(self, path: str) -> None:
        """Replace the bind of a host directory at `path` by a tmpfs of per-entry binds."""
        host = self.host_binds.pop(path)
        real = self.real(path)
        writable = not (os.statvfs(real).f_flag & os.ST_RDONLY)
        _check(_libc.umount2(real.encode(), MNT_DETACH), f"umount {real}")
        mount("tmpfs", real, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        self.skeletons.append(real)
        self.populate(host, path, writable)

    def union_root(self, host_dir: str) -> None:
        """The root as Occlum's union: `host_dir` read-only below, an upper layer in the
        enclave's memory (a tmpfs, never the host's disk) that takes every change. The
        layers live in the view's own tmpfs, hidden once the overlay is mounted over it.
        noexec as the host binds: what runs from below is staged verified copies."""
        if any(c in host_dir for c in ",:\\"):
            raise PylosError(f"fs.root: a union root's directory cannot contain ',', ':' or "
                             f"'\\' (overlayfs options): '{host_dir}'")
        layers = self.real("/.pylos-union")
        for directory in (layers, f"{layers}/upper", f"{layers}/work"):
            os.mkdir(directory, 0o755)
        self.result.union_upper_fd = os.open(f"{layers}/upper",
                                             os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        mount("overlay", self.newroot, "overlay", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              f"lowerdir={host_dir},upperdir={layers}/upper,workdir={layers}/work,userxattr")
        self.result.union_mount_id = _mount_id_of(self.newroot)

    def populate(self, host_dir: str, path: str, writable: bool) -> None:
        """Bind each entry of `host_dir` at `path/<entry>` (symlinks are recreated)."""
        for name in sorted(os.listdir(host_dir)):
            host = os.path.join(host_dir, name)
            inner = os.path.join(path, name)
            if os.path.islink(host):
                os.symlink(os.readlink(host), self.real(inner))
            elif os.path.isdir(host) or os.path.isfile(host):
                self.bind(host, inner, writable)

    def synthesize(self, files: dict[str, bytes]) -> None:
        """Read-only files with the given contents, over whatever the mounts put there.

        They are written to a staging tmpfs (a memfd cannot be bind-mounted) that is detached
        once bound: the binds keep it alive and no path names it.
        """
        if not files:
            return
        staging = self.real("/.pylos-staging")
        os.mkdir(staging)
        mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        for index, (path, content) in enumerate(files.items()):
            source = f"{staging}/{index}"
            with open(source, "wb") as f:
                f.write(content)
            self.ensure(path, False)
            mount(source, self.real(path), None, MS_BIND)
            self.restrict(self.real(path))
            self.result.private_mount_ids.append(_mount_id_of(self.real(path)))
        _check(_libc.umount2(staging.encode(), MNT_DETACH), "umount staging")
        os.rmdir(staging)

    def mount_verified(self, verified: VerifiedMount) -> None:
        """The verified view's file system, where the binds of read-only paths come from."""
        point = self.real(VERIFIED_MOUNT_POINT)
        os.mkdir(point, 0o700)
        mount("pylos", point, "fuse", MS_NOSUID | MS_NODEV | MS_RDONLY,
              f"fd={verified.fd},rootmode=40000,user_id={verified.uid},"
              f"group_id={verified.gid},allow_other,default_permissions")
        verified.announce(verified.fd)  # its server must answer before the first bind

    def unmount_verified(self) -> None:
        """No path names the view's file system once built: only its binds remain."""
        point = self.real(VERIFIED_MOUNT_POINT)
        _check(_libc.umount2(point.encode(), MNT_DETACH), "umount the verified view")
        os.rmdir(point)

    def finish(self, loader_search: list[str], devices: dict[str, str]) -> None:
        self._make_dev()
        for path, host in devices.items():  # after /dev, which may hold them
            self.ensure(path, False)
            self.host_binds.pop(path, None)
            mount(host, self.real(path), None, MS_BIND)
            # Read-only bind: the device's data stays readable and writable, its host inode's
            # metadata does not (chmod would change the host's node).
            self.restrict(self.real(path))
        self._make_exec_staging()
        self.ensure("/proc", True)
        self.host_binds.pop("/proc", None)
        mount("proc", self.real("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        self.result.private_mount_ids.append(_mount_id_of(self.real("/proc")))
        self._protect_kernel_knobs()
        self._make_sys_subset()
        self._make_loader_resolvable(loader_search)
        if self.verified_roots is not None:
            self.unmount_verified()
        union = [] if self.result.union_mount_id >= 0 else [self.newroot]  # the union stays rw
        for skeleton in [*self.skeletons, *union]:
            mount(None, skeleton, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)

    def _protect_kernel_knobs(self) -> None:
        """Make the host-wide parts of the new /proc read-only, as bubblewrap does.

        Most of /proc/sys is global, not per namespace, and its permission check compares the
        caller's uid with the *host's* root uid: when pylos runs as root, the enclave's uid 0
        is the host's uid 0 and could write `kernel.core_pattern` (a pipe there runs a command
        as host root), `net.*` of the shared network namespace, sysrq... Reads still work.
        """
        for name in KERNEL_KNOBS:
            real = self.real(f"/proc/{name}")
            if not os.path.exists(real):
                continue
            mount(real, real, None, MS_BIND | MS_REC)
            self.restrict(real)
            self.result.private_mount_ids.append(_mount_id_of(real))

    def _make_sys_subset(self) -> None:
        """SYS_SUBSET, where the manifest's mounts do not already show them."""
        for path in SYS_SUBSET:
            if not os.path.isdir(path) or os.path.lexists(self.real(path)):
                continue
            self.ensure(path, True)
            self.host_binds.pop(path, None)
            mount(path, self.real(path), None, MS_BIND | MS_REC)
            self.restrict(self.real(path))
            self.result.private_mount_ids.append(_mount_id_of(self.real(path)))

    def _make_dev(self) -> None:
        self.ensure("/dev", True)
        self.host_binds.pop("/dev", None)
        dev = self.real("/dev")
        mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=0755")
        for name in DEV_NODES:
            if os.path.exists(f"/dev/{name}"):
                os.close(os.open(f"{dev}/{name}", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
                mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
                # Read-only binds: the node stays readable and writable (a device's data is
                # not the mount's), but its inode is the host's: chmod/chown/utime would
                # change the host's /dev/null (the enclave's root is the host's root when
                # pylos runs as root).
                self.restrict(f"{dev}/{name}")
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(target, f"{dev}/{name}")
        if self.verified_roots is not None:
            os.mkdir(self.real(REFUSED_DIR), 0o555)
            mount(f"{self.real(VERIFIED_MOUNT_POINT)}/{REFUSED}", self.real(REFUSED_DIR), None,
                  MS_BIND)
            self.restrict(self.real(REFUSED_DIR), inherited=False)
        os.mkdir(f"{dev}/shm", 0o1777)
        mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777")
        self.result.private_mount_ids.append(_mount_id_of(f"{dev}/shm"))

    def _make_exec_staging(self) -> None:
        """The tmpfs for staged executables: read-only in the view, writable only through
        init's descriptor of a detached mount of it (`runtime/staging.py`)."""
        from pylos.runtime.staging import STAGING_DIR

        writable = self.real("/dev/.pylos-exec-rw")
        os.mkdir(writable, 0o700)
        mount("tmpfs", writable, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        self.result.staging_dirfd = os.open(writable, os.O_RDONLY | os.O_DIRECTORY |
                                            os.O_CLOEXEC)
        visible = self.real(STAGING_DIR)
        os.mkdir(visible, 0o755)
        mount(writable, visible, None, MS_BIND)
        self.restrict(visible, readonly=True)
        _check(_libc.umount2(writable.encode(), MNT_DETACH), "umount staging")
        os.rmdir(writable)

    def _make_loader_resolvable(self, search: list[str]) -> None:
        """Gramine finds the ELF interpreter by name; the kernel needs PT_INTERP's path."""
        real = self.real(LOADER)
        if os.path.exists(real):
            return
        name = os.path.basename(LOADER)
        for directory in search:
            if os.path.isfile(self.real(os.path.join(directory, name))):
                self.ensure(os.path.dirname(LOADER), True)
                if os.path.lexists(real):
                    os.unlink(real)
                os.symlink(os.path.join(directory, name), real)
                return


def _mount_id_of(path: str) -> int:
    from pylos.runtime.target import mount_id

    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        return mount_id(fd)
    finally:
        os.close(fd)


def _mounts_at_or_below(target: str) -> list[str]:
    """`target` and the mount points under it (a recursive bind brings submounts along)."""
    found = [target]
    prefix = target.rstrip("/") + "/"
    with open("/proc/self/mountinfo", "rb") as table:
        for line in table:
            # Field 5 is the mount point, with space, tab, newline and backslash as \ooo.
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]),
                           line.split(b" ", 5)[4]).decode(errors="surrogateescape")
            if point.startswith(prefix):
                found.append(point)
    return found


def build_view(plan: ViewPlan, newroot: str, start_dir: str,
               verified: VerifiedMount | None = None) -> ViewResult:
    """Build the view at `newroot` (an empty directory) and make it this process's root.

    Runs inside the new namespaces, as the PID namespace's init, before the program starts.
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", newroot, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    builder = ViewBuilder(newroot, plan.verified_roots if verified else None, plan.exec_allowed)
    if verified is not None:
        builder.mount_verified(verified)
    if plan.root_host is not None and plan.root_union:
        builder.union_root(plan.root_host)
    elif plan.root_host is not None:
        # Entries of the root are bound one by one into the tmpfs skeleton, so new top-level
        # mount points are created in the skeleton, never in the host directory.
        builder.populate(plan.root_host, "/", plan.root_writable)
    for entry in plan.binds:
        if isinstance(entry, str):
            builder.tmpfs(entry)
        else:
            builder.bind(entry.host, entry.path, entry.writable)
    # Skeletons end read-only: new files go to tmpfs mounts or allowed directories.
    builder.synthesize(plan.synthesized)
    builder.finish(plan.loader_search, plan.devices)
    os.chdir(newroot)
    _check(_libc.syscall(SYSCALLS["pivot_root"], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    try:
        os.chdir(start_dir)
    except OSError as exc:
        raise PylosError(f"fs.start_dir '{start_dir}': {exc.strerror}") from None
    return builder.result


def namespaces_available() -> list[str]:
    """Why no enclave view can be built here, as sentences with the fix; empty when it can.

    Tries what `pylos run` does, in throw-away processes (the caller's namespaces never
    change): the user, mount, PID and UTS namespaces with their uid/gid maps, then, as the
    new PID namespace's init, a minimal view: tmpfs root, /dev binds, a fresh /proc with its
    kernel knobs read-only, pivot_root. Containers often allow the first and refuse the
    second (a /proc with masked entries cannot be mounted again).
    """
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(reader)
        try:
            _probe_view(writer)
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as problems:
        report = problems.read().decode()
    os.waitpid(child, 0)
    return [line for line in report.split("\n") if line]


def _probe_view(report: int) -> None:
    try:
        enter_user_namespace(0, 0)
    except OSError as exc:
        os.write(report, f"cannot create user, mount, PID and UTS namespaces: {exc.strerror}"
                 f"{user_namespace_hint()}\n".encode())
        return
    init = os.fork()
    if init == 0:
        try:
            build_view(ViewPlan(root_host=None, root_writable=False),
                       os.environ.get("TMPDIR", "/tmp"), "/")
        except (OSError, PylosError) as exc:
            os.write(report, f"cannot build a view in the new namespaces: {exc}\n".encode())
        finally:
            os._exit(0)
    os.waitpid(init, 0)


def user_namespace_hint() -> str:
    """The host settings that forbid user namespaces, if one of them is why."""
    settings = (("/proc/sys/user/max_user_namespaces", "0", "sysctl user.max_user_namespaces="
                 "15000"),
                ("/proc/sys/kernel/unprivileged_userns_clone", "0",
                 "sysctl kernel.unprivileged_userns_clone=1"),
                ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
                 "sysctl kernel.apparmor_restrict_unprivileged_userns=0"))
    fixes = []
    for path, blocking, fix in settings:
        try:
            with open(path) as setting:
                if setting.read().strip() == blocking:
                    fixes.append(fix)
        except OSError:
            continue
    if fixes:
        return f" (fix: {'; '.join(fixes)})"
    return " (in a container: allow unshare/clone of namespaces, e.g. in its seccomp profile)"
