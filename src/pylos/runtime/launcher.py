"""`pylos run`: start the program in its enclave and supervise it until it exits.

Processes (host view):

    supervisor (this process; serves the listener; joins the enclave's user namespace only)
      └─ namespace creator: own process group; unshare(user, mount, PID, UTS), waits, relays
         the exit status
           └─ init (PID 1 of the enclave, non-dumpable): builds the view, pivots into it,
              reaps orphans
                └─ the program: rlimits, own process group, seccomp filter, execve

The view's root (an fd), its mount IDs and the listener fd travel to the supervisor over a
socketpair. When the program (the PID namespace's init's only real child) exits, init exits
and the kernel kills whatever is left in the namespace. Every process has PDEATHSIG=SIGKILL on
its parent, so the supervisor's death takes the whole enclave down. Nothing inside can name the
supervisor: it is outside the PID namespace and its process group.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import marshal
import os
import resource
import select
import signal
import stat
import sys

from pylos.errors import PylosError
from pylos.runtime import seccomp
from pylos.runtime.channel import Channel, pair, recv_fds, send_fds, sethostname
from pylos.runtime.config import EnclaveConfig, build_config
from pylos.runtime.fs import (
    FuseSetup,
    encrypted_is_file,
    fuse_mounts,
    is_nested,
    mount_all,
    open_devices,
)
from pylos.runtime.namespaces import (
    Bind,
    VerifiedMount,
    ViewPlan,
    ViewResult,
    build_view,
    enter_user_namespace,
    join_user_namespace,
    map_id_range,
    root_index,
)
from pylos.runtime.staging import Stager, StagingArea
from pylos.runtime.supervisor import Log
from pylos.runtime.syscalls import (
    access,
    directories,
    files,
    memory,
    metadata,
    processes,
    union,
)
from pylos.runtime.syscalls.table import SYSCALLS
from pylos.runtime.watchdog import StartupStalled, StartupWatchdog, start_timeout
from pylos.typing_compat import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable

    from pylos.cli.run_args import RunOptions
    from pylos.runtime.load import LoadedEnclave

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
ADDR_NO_RANDOMIZE = 0x0040000
READ_IMPLIES_EXEC = 0x0400000
PERSONALITY_QUERY = 0xFFFFFFFF
CLONE_NAMESPACE_FLAGS = 0x7E020000 | 0x00000080  # CLONE_NEW{NS,CGROUP,UTS,IPC,USER,PID,NET,TIME}

# Calls that must never run in an enclave (docs/runtime.md lists why).
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "open_by_handle_at", "name_to_handle_at", "mount", "umount2", "pivot_root", "chroot",
    "unshare", "setns", "bpf", "userfaultfd", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "perf_event_open", "keyctl", "add_key", "request_key",
    "reboot", "iopl", "ioperm", "uselib", "acct", "swapon", "swapoff", "open_tree",
    "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "open_tree_attr",
    "lookup_dcookie", "quotactl", "quotactl_fd",
)
NOT_IMPLEMENTED = ("io_uring_setup", "io_uring_enter", "io_uring_register", "clone3")
# ioctls that push input into a terminal: a program sharing the user's terminal could type
# commands into the shell that started `pylos run` (TIOCSTI; TIOCLINUX's selection paste).
TERMINAL_INJECTION = (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX
SET_ID_BITS = stat.S_ISUID | stat.S_ISGID
DEVICE_NODE_BIT = 0o020000  # in S_IFCHR (0o020000) and S_IFBLK (0o060000)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Confinement(NamedTuple):
    """What the program's process applies to itself just before its exec: the seccomp
    filter, and Landlock's rules (none when the kernel has no Landlock: `landlock_abi` 0)."""

    seccomp_filter: bytes
    landlock_rules: tuple[tuple[str, int], ...]
    landlock_abi: int


def filter_for(config: EnclaveConfig, verified: bool = False) -> tuple[bytes, dict]:
    """The BPF program for this enclave and the supervisor's handler table.

    `verified`: the view is the verified view (runtime/fs/verified.py), which the kernel
    enforces: only opens that may write or create are trapped (the filter looks at the
    flags), access goes straight to the kernel, and exec is trapped for log lines only."""
    actions: dict[int, int] = {}
    handlers: dict = {}
    for name in DENIED:
        actions[SYSCALLS[name]] = seccomp.errno_action(errno.EPERM)
    for name in NOT_IMPLEMENTED:
        actions[SYSCALLS[name]] = seccomp.errno_action(errno.ENOSYS)
    trapped = {
        "open": files.handle_open, "openat": files.handle_openat,
        "openat2": files.handle_openat2, "creat": files.handle_creat,
        "execve": processes.handle_execve, "execveat": processes.handle_execveat,
        "memfd_create": memory.handle_memfd_create, "rmdir": directories.handle_rmdir,
    }
    if verified:  # exec stays trapped, for Gramine's messages only (the kernel enforces)
        for name in ("open", "openat"):
            del trapped[name]
    if config.brk_max_size is not None:
        trapped["brk"] = memory.handle_brk
    if config.disallow_subprocesses:
        trapped.update(fork=processes.refuse_subprocess, vfork=processes.refuse_subprocess)
    trapped.update(metadata.HANDLERS)
    if config.root.type == "union":
        trapped.update(union.HANDLERS)
    for name, value in config.mock_syscalls.items():
        if name not in SYSCALLS:
            raise PylosError(f"sys.debug__mock_syscalls: unknown system call {name!r}")
        if value <= 0:
            actions[SYSCALLS[name]] = seccomp.errno_action(-value)
            trapped.pop(name, None)
        else:
            trapped[name] = processes.handle_mocked
    for name, handler in trapped.items():
        actions[SYSCALLS[name]] = seccomp.RET_USER_NOTIF
        handlers[SYSCALLS[name]] = handler
    rules: list[seccomp.ArgRule | seccomp.SizeRule] = []
    for name, flags_arg, handler in (("open", 1, files.handle_open),
                                     ("openat", 2, files.handle_openat)):
        if not verified or name in config.mock_syscalls:
            continue
        handlers[SYSCALLS[name]] = handler
        rules.append(seccomp.ArgRule(SYSCALLS[name], flags_arg,
                                     ((files.CHANGING_OPEN, seccomp.RET_USER_NOTIF),),
                                     seccomp.RET_ALLOW))
    for name, (handler, mode_arg) in access.HANDLERS.items():
        if name in config.mock_syscalls or verified:
            continue
        handlers[SYSCALLS[name]] = handler  # X_OK only: the filter looks at the mode
        rules.append(seccomp.ArgRule(SYSCALLS[name], mode_arg,
                                     ((access.X_OK, seccomp.RET_USER_NOTIF),),
                                     actions.pop(SYSCALLS[name], seccomp.RET_ALLOW)))
    if "unlinkat" not in config.mock_syscalls:  # only directory removal needs a look
        handlers[SYSCALLS["unlinkat"]] = directories.handle_unlinkat
        rules.append(seccomp.ArgRule(
            SYSCALLS["unlinkat"], 2, ((directories.AT_REMOVEDIR, seccomp.RET_USER_NOTIF),),
            actions.pop(SYSCALLS["unlinkat"], seccomp.RET_ALLOW)))
    clone = SYSCALLS["clone"]
    if "clone" not in config.mock_syscalls:  # a mocked clone never runs: nothing to judge
        handlers[clone] = processes.handle_clone
        thread_action = (seccomp.RET_USER_NOTIF if config.max_threads is not None
                         else seccomp.RET_ALLOW)
        process_action = (seccomp.RET_USER_NOTIF if config.disallow_subprocesses
                          else seccomp.RET_ALLOW)
        rules.append(seccomp.ArgRule(
            clone, 0, ((CLONE_NAMESPACE_FLAGS, seccomp.errno_action(errno.EPERM)),
                       (processes.CLONE_THREAD, thread_action)), process_action))
        actions.pop(clone, None)
    if SYSCALLS["mmap"] not in actions:
        rules.append(seccomp.SizeRule(SYSCALLS["mmap"], 3, memory.MAP_ANONYMOUS, 1,
                                      memory.LARGE_MMAP, seccomp.RET_USER_NOTIF))
        handlers[SYSCALLS["mmap"]] = memory.handle_large_mmap
    # No set-id bits leave the enclave: a set-uid file made in an allowed directory is a
    # set-uid file on the host (set-uid root when pylos runs as root). Modes are registers,
    # so the filter decides alone. mknod: no device nodes either (S_IFCHR and S_IFBLK share
    # bit 0o020000, which no other node type mknod accepts has).
    refused = seccomp.errno_action(errno.EPERM)
    for name, mode_arg in (("chmod", 1), ("fchmod", 1), ("fchmodat", 2), ("fchmodat2", 2),
                           ("mknod", 1), ("mknodat", 2)):
        checks = ((SET_ID_BITS, refused),) if "chmod" in name else (
            (SET_ID_BITS, refused), (DEVICE_NODE_BIT, refused))
        otherwise = actions.pop(SYSCALLS[name], seccomp.RET_ALLOW)  # trapped or mocked
        rules.append(seccomp.ArgRule(SYSCALLS[name], mode_arg, checks, otherwise))
    # Extended attributes: Gramine has none. Setting them is refused as a file system without
    # them refuses it (tools such as cp -a carry on): security.capability on a file in an
    # allowed directory would be a file capability on the host.
    for name in ("setxattr", "lsetxattr", "fsetxattr", "setxattrat"):
        actions.setdefault(SYSCALLS[name], seccomp.errno_action(errno.EOPNOTSUPP))
    # READ_IMPLIES_EXEC makes every readable mapping executable; querying (0xffffffff) and
    # every other persona stay possible.
    if SYSCALLS["personality"] not in actions:
        rules.append(seccomp.ArgRule(
            SYSCALLS["personality"], 0, ((READ_IMPLIES_EXEC, refused),), seccomp.RET_ALLOW,
            unless=PERSONALITY_QUERY))
    if SYSCALLS["ioctl"] not in actions:  # a mocked ioctl never reaches the terminal
        rules.append(seccomp.ArgRule(
            SYSCALLS["ioctl"], 1,
            tuple((request, seccomp.errno_action(errno.EPERM)) for request in TERMINAL_INJECTION),
            seccomp.RET_ALLOW, equals=True))
    return seccomp.build_filter(actions, rules), handlers


def _create_allowed_directories(config: EnclaveConfig, log: Log) -> None:
    """An allowed directory (`file:logs/`) that does not exist yet is made, empty, on the
    host: the program may create files there, as in Gramine, and a bind needs a directory to
    bind. Allowed single files that do not exist stay so (the program may create them where
    their directory is writable)."""
    for allowed in config.allowed:
        if allowed.endswith("/") and not os.path.lexists(allowed.rstrip("/")):
            try:
                os.makedirs(allowed, 0o755)
            except OSError as exc:
                raise PylosError(f"sgx.allowed_files: cannot create the missing directory "
                                 f"'{allowed}': {exc.strerror}") from None
            log("warning", f"created the allowed directory '{allowed}' (it did not exist)")


def verified_view_possible(config: EnclaveConfig) -> bool:
    """Whether this enclave's view can be the verified view (runtime/fs/verified.py).

    Not with a union root (its image is an overlayfs lower layer: copy-ups are verified by
    trapped calls), an encrypted image (its trusted files are decrypted by the supervisor),
    `pylos_read_only` mounts (allowed host files shown read-only), `loader.log_level =
    "trace"` (which lists every open), or without /dev/fuse. `PYLOS_VERIFIED_VIEW=0` asks
    for the trapped view anyway (to compare, or to rule the verified view out)."""
    return (os.environ.get("PYLOS_VERIFIED_VIEW") != "0" and config.root.type != "union"
            and config.decrypt_trusted is None and not any(m.read_only for m in config.mounts)
            and not config.logs("trace") and os.access("/dev/fuse", os.R_OK | os.W_OK))


def view_plan(config: EnclaveConfig, verified: bool = False) -> ViewPlan:
    """Mounts shallow-first (a deeper mount then lands on top), manifest order otherwise."""
    allowed = [a.rstrip("/") for a in config.allowed]
    writable_roots = [a for a in allowed if os.path.exists(a)]

    def writable(host: str | None) -> bool:
        return host is not None and any(host == a or host.startswith(a + "/")
                                        for a in writable_roots)

    entries: list[tuple[str, Bind | str]] = []
    synthesized = {}
    devices = {}
    for mount in config.mounts:
        if mount.type == "device":
            assert mount.host is not None
            if not stat.S_ISCHR(_stat_or_none(mount.host)):
                raise PylosError(f"fs.mounts: 'dev:{mount.host}' (at {mount.path}) is not a "
                                 "character device on this host")
            devices[mount.path] = mount.host
        elif mount.type == "tmpfs":
            entries.append((mount.path, mount.path))
        elif mount.type == "encrypted":  # a placeholder for init's FUSE mount (runtime/fs)
            if encrypted_is_file(mount):
                synthesized[mount.path] = b""
            else:
                entries.append((mount.path, mount.path))
        elif mount.type == "chroot":
            entries.append((mount.path, Bind(mount.host, mount.path,
                                             writable(mount.host) and not mount.read_only)))
        else:
            raise PylosError(f"fs.mounts: mount type {mount.type!r} (at {mount.path}) is not "
                             "supported by this pylos runtime yet")
    # Allowed host paths inside read-only mounts become their own read-write binds.
    for host in writable_roots:
        for mount in [*config.mounts, config.root]:
            if mount.host and mount.type == "chroot" and host.startswith(mount.host + "/"):
                inside = mount.path.rstrip("/") + host[len(mount.host):]
                entries.append((inside, Bind(host, inside, True)))
                break
    entries.sort(key=lambda item: item[0].count("/") if item[0] != "/" else 0)
    search = [d for d in config.env.get("LD_LIBRARY_PATH", "").split(":") if d]
    if config.extra_runtime_domain_names_conf:
        synthesized["/etc/resolv.conf"] = host_resolv_conf()
    root_host = config.root.host if config.root.type in ("chroot", "union") else None
    roots = None
    mount_points: dict[str, bool] = {}
    if verified:  # every read-only host path of the view comes from the verified view
        roots = [bind.host for _, bind in entries if isinstance(bind, Bind) and not bind.writable]
        if root_host is not None and not writable(root_host):
            roots.insert(0, root_host)
        targets = [(path, isinstance(e, str) or os.path.isdir(e.host)) for path, e in entries]
        targets += [(path, False) for path in [*synthesized, *devices]]
        mount_points = verified_mount_points(targets, [e for _, e in entries], roots,
                                             root_host if root_host in roots else None)
    return ViewPlan(
        root_host=root_host,
        root_writable=writable(config.root.host),
        root_union=config.root.type == "union",
        binds=[entry for _, entry in entries],
        loader_search=[*search, "/lib", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"],
        synthesized=synthesized,
        devices=devices,
        verified_roots=roots,
        verified_mount_points=mount_points,
        exec_allowed=verified and config.allow_all_but_log,
    )


def verified_mount_points(targets: list[tuple[str, bool]], entries: list[Bind | str],
                          roots: list[str], root_host: str | None) -> dict[str, bool]:
    """The mount points the verified view must show inside the directories it serves, by
    their names in the view ("1/x86_64-linux-gnu": is a directory): `targets` are the view's
    mount points (path, is a directory), `entries` its mounts in order, `root_host` the root's
    directory when the view serves it (its entries are bound one by one).

    A mount point missing from a host directory would make init replace the bind of the
    whole directory by a tmpfs of per-entry binds (`ViewBuilder.explode`), and verify every
    trusted file in it as it binds it: Gramine's `/lib` with `/lib/x86_64-linux-gnu` inside
    hashed all of the runtime directory at every start. Shown by the view, the directory
    stays one bind, and its files are verified when the program first uses them."""
    served = {e.path: e.host for e in entries
              if isinstance(e, Bind) and not e.writable and os.path.isdir(e.host)}
    others = {e if isinstance(e, str) else e.path for e in entries} - served.keys()
    points: dict[str, bool] = {}
    for path, is_dir in targets:
        owner = max((p for p in [*served, *others, "/"] if p != path and (
            p == "/" or path.startswith(p.rstrip("/") + "/"))), key=len, default=None)
        if owner is None:
            continue
        parts = path[len(owner.rstrip("/")):].strip("/").split("/")
        if owner in served:
            base = served[owner]
        elif owner == "/" and root_host is not None and len(parts) > 1 and os.path.isdir(
                os.path.join(root_host, parts[0])) and not os.path.islink(
                os.path.join(root_host, parts[0])):
            base, parts = os.path.join(root_host, parts[0]), parts[1:]  # a root entry's bind
        else:
            continue  # made in a tmpfs, or in a host bind (which init replaces as before)
        for index, part in enumerate(parts):
            base = os.path.join(base, part)
            if os.path.lexists(base):
                if os.path.isdir(base) and not os.path.islink(base):
                    continue
                break  # something else is in the way: init says so, as before
            name = root_index(roots, base)
            if name is not None:
                points[name] = is_dir or index < len(parts) - 1
    return points


def _stat_or_none(path: str) -> int:
    """The mode of `path`, 0 when it does not exist."""
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


def view_rules(config: EnclaveConfig, plan: ViewPlan) -> tuple[tuple[str, int], ...]:
    """Landlock's rules for the view (runtime/landlock.py): the program may read anywhere in
    it, and write, create, remove, rename, link and truncate only where the manifest lets it
    write (allowed binds, tmpfs and encrypted mounts, a writable fs.root, /dev/shm).

    Execute is granted on the whole view: which files may run is decided by the view's mount
    flags (host binds are noexec) and the trapped exec, because verified copies are staged
    over their own paths, wherever those lie in the view (runtime/staging.py).
    """
    from pylos.runtime import landlock

    root = landlock.READ_ONLY | landlock.EXECUTE | (
        landlock.WRITABLE if plan.root_writable or plan.root_union else 0)
    rules = [("/", root)]
    rules += [(bind.path, landlock.WRITABLE) for bind in plan.binds
              if isinstance(bind, Bind) and bind.writable]
    private = [mount.path for mount in config.mounts if mount.type in ("tmpfs", "encrypted")]
    # A mount inside another is covered by the outer rule (Landlock's rules hold beneath
    # their directory, across mounts); naming it would look it up through the outer FUSE
    # mount, whose server starts only after the program has confined itself.
    rules += [(path, landlock.WRITABLE) for path in private
              if not any(path.startswith(outer.rstrip("/") + "/") for outer in private)]
    rules += [(path, landlock.READ_FILE | landlock.WRITE_FILE | landlock.TRUNCATE
               | landlock.IOCTL_DEV) for path in plan.devices]
    return (*rules, *landlock.DEVICES_AND_PROC)


STANDARD_STREAMS = ("standard input", "standard output", "standard error")


def _log_view(log: Log, config: EnclaveConfig, plan: ViewPlan,
              confinement: Confinement) -> None:
    """`loader.log_level = "debug"`: what the view holds and which policies apply."""
    from pylos.runtime import landlock

    root = plan.root_host or "a tmpfs"
    log("debug", f"view: / is {root} ({'read-write' if plan.root_writable else 'read-only'})")
    for entry in plan.binds:
        if isinstance(entry, Bind):
            log("debug", f"view: {entry.path} is {entry.host} "
                f"({'read-write: allowed' if entry.writable else 'read-only'})")
        else:
            kind = next((m.type for m in config.mounts if m.path == entry), "tmpfs")
            log("debug", f"view: {entry} is a{'n' if kind == 'encrypted' else ''} {kind} mount")
    for path in plan.synthesized:
        log("debug", f"view: {path} is made by pylos (read-only)")
    log("debug", f"policy: {len(config.trusted)} trusted files, {len(config.allowed)} allowed "
        f"paths, sgx.file_check_policy = "
        f"{'allow_all_but_log' if config.allow_all_but_log else 'strict'}")
    writable = [path for path, rights in confinement.landlock_rules
                if rights & landlock.WRITE_FILE and path != "/"]
    log("debug", f"Landlock ABI {confinement.landlock_abi}: writes only beneath "
        + ", ".join(writable) if confinement.landlock_abi else "Landlock: unavailable")


def _replace_unsafe_standard_descriptors(log: Log) -> None:
    """A standard descriptor that is a directory (or an O_PATH handle of anything) would be a
    door to the host inside the enclave (fchdir, openat on it): /dev/null takes its place.

    Python cannot even start with a directory there: the `pylos` launcher (scripts/setup)
    has already replaced those and names them in PYLOS_REPLACED_STDIO.
    """
    replaced = {int(fd): "a directory" for fd in
                os.environ.pop("PYLOS_REPLACED_STDIO", "").split() if fd in ("0", "1", "2")}
    for fd in range(3):
        try:
            is_path_handle = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_PATH
        except OSError:
            continue  # closed: the program finds it closed too
        if is_path_handle or stat.S_ISDIR(os.fstat(fd).st_mode):
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, fd)
            os.close(null)
            replaced[fd] = "an O_PATH handle" if is_path_handle else "a directory"
    for fd, what in sorted(replaced.items()):
        log("warning", f"{STANDARD_STREAMS[fd]} (fd {fd}) is {what}: replaced by /dev/null, so "
            "the enclave cannot reach the host through it")


RESOLV_OPTIONS = ("edns0", "inet6", "rotate", "use-vc")


def host_resolv_conf(path: str = "/etc/resolv.conf") -> bytes:
    """Gramine's sanitized resolv.conf: nameserver, search and a few known options only."""
    kept: list[str] = []
    try:
        lines = open(path).read().splitlines()  # noqa: SIM115
    except OSError:
        lines = []
    for line in lines:
        words = line.split()
        if not words:
            continue
        if words[0] == "nameserver" and len(words) >= 2:
            kept.append(f"nameserver {words[1]}")
        elif words[0] == "search" and len(words) >= 2:
            kept.append("search " + " ".join(words[1:]))
        elif words[0] == "options":
            options = [o for o in words[1:] if o in RESOLV_OPTIONS]
            if options:
                kept.append("options " + " ".join(options))
    return ("\n".join(kept) + "\n").encode() if kept else b""


UNHONOURED = (
    (("sys", "allowed_ioctls"), "ioctls go straight to the kernel under pylos"),
    (("sys", "ioctl_structs"), "ioctls go straight to the kernel under pylos"),
    (("sgx", "insecure__rpc_thread_num"), "pylos has no exitless RPC threads"),
    (("sgx", "ra_client_spid"), "EPID attestation is not simulated (only DCAP)"),
    (("sgx", "ra_client_linkable"), "EPID attestation is not simulated (only DCAP)"),
    (("sgx", "preheat_enclave"), "there is no EPC to pre-fault"),
    (("sgx", "enable_stats"), "there are no SGX transitions to count"),
    (("sgx", "profile"), "the SGX profiler is not available"),
    (("sgx", "vtune_profile"), "VTune integration is not available"),
)


def unhonoured_keys(data: dict) -> list[str]:
    """One warning for each manifest key set to something pylos cannot honour."""
    warnings = []
    for keys, why in UNHONOURED:
        value = data
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value not in (None, False, 0, "", "none", {}) and not (
                keys[-1] == "profile" and value.get("enable", "none") == "none"):
            warnings.append(f"{'.'.join(keys)} is not honoured: {why}")
    return warnings


def _open_files_limit(wanted: int, log: Log) -> int:
    """`sys.fds.limit` as the program's RLIMIT_NOFILE (soft and hard, as Gramine sets it).
    The program's processes inherit our hard limit and, in their user namespace, cannot
    raise it: raise ours first where we may (root), else clamp to it, with one warning."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and wanted > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, wanted))
        except (OSError, ValueError):
            log("warning", f"sys.fds.limit = {wanted} is above this host's limit of open files "
                f"({hard}): the program gets {hard}")
            return hard
    return wanted


def _rename_command_line(name: str) -> None:
    """What /proc/<pid>/cmdline shows: the program sees init as PID 1 of its enclave, and
    its command line named the host's interpreter, virtual environment and launcher code.
    Overwritten in place (the kernel reads the argument area of the process's memory)."""
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
    text = name.encode()[:max(end - start - 2, 0)]
    ctypes.memset(start, 0, end - start)
    ctypes.memmove(start, text, len(text))
    # A last byte that is not NUL tells the kernel the area was rewritten (setproctitle): it
    # then shows the area up to its first NUL, the name alone.
    ctypes.memset(end - 1, ord(" "), 1)


def _set_pdeathsig() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _program(config: EnclaveConfig, confinement: Confinement, channel: Channel,
             identity: bool) -> None:
    """The program's process, just before exec (never returns)."""
    _set_pdeathsig()
    # Forked from the non-dumpable init: the confined supervisor must read this process's
    # memory (its execve's path) before the exec gives it a fresh, dumpable image.
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    os.setpgid(0, 0)
    if os.isatty(0):
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            os.tcsetpgrp(0, os.getpgrp())  # Ctrl-C reaches the program's group
        signal.signal(signal.SIGTTOU, previous)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGPIPE, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_NOFILE, (config.fds_limit, config.fds_limit))
    resource.setrlimit(resource.RLIMIT_STACK, (config.stack_size, config.stack_size))
    resource.setrlimit(resource.RLIMIT_AS, (config.enclave_size, config.enclave_size))
    if config.disable_aslr:
        _libc.personality(ADDR_NO_RANDOMIZE)
    if confinement.landlock_abi:
        from pylos.runtime import landlock

        landlock.confine((*confinement.landlock_rules, *_standard_stream_rules()),
                         confinement.landlock_abi)
    listener = seccomp.install_filter(confinement.seccomp_filter)
    send_fds(channel, b"L", [listener])
    os.close(listener)
    channel.close()
    # Nothing but standard input, output and error crosses into the program: descriptors the
    # caller of `pylos run` left open (a shell's `exec 9</dir`, a runner's pipes) would be
    # doors to the host (fchdir to a host directory), and ours are not the program's business.
    if _libc.syscall(SYSCALLS["close_range"], 3, 0xFFFFFFFF, 0) != 0:  # also above the limit
        raise OSError(ctypes.get_errno(), "close_range")
    os.execve(config.entrypoint, config.argv, config.env)


def _standard_stream_rules() -> list[tuple[str, int]]:
    """Landlock rules that let the program reopen its standard streams (`/dev/stdin`) when
    they are host files or devices (outside the view), with the access it already has."""
    from pylos.runtime import landlock

    rules = []
    for number in (0, 1, 2):
        try:
            st = os.fstat(number)
            mode = fcntl.fcntl(number, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError:
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            continue  # pipes and sockets: no path rule reaches them
        rights = (landlock.READ_FILE if mode != os.O_WRONLY else 0) | (
            landlock.WRITE_FILE if mode != os.O_RDONLY else 0)
        rules.append((f"/proc/self/fd/{number}", rights))
    return rules


def _init(config: EnclaveConfig, plan: ViewPlan, newroot: str, confinement: Confinement,
          channel: Channel, staging_channel: Channel, identity: bool) -> int:
    """PID 1 of the enclave: build the view, start the program, reap, exit with its status.

    Init is the one process of the enclave outside the seccomp filter, so nothing in the
    enclave may reach into it: non-dumpable, its /proc/1/mem, environ (the host's environment)
    and fds need CAP_SYS_PTRACE in the host's user namespace, which neither the program nor
    the confined supervisor has; signals from inside reach it only where it has handlers.
    """
    _set_pdeathsig()
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    _rename_command_line("pylos-init")
    if identity:  # no namespaces (runtime/identity.py): the host's file system as it is
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        fuse, fuse_fds, fuse_warnings, fuse_ids, result = [], [], [], [], ViewResult()
        try:
            os.chdir(config.start_dir)
        except OSError as exc:
            raise PylosError(f"fs.start_dir '{config.start_dir}': {exc.strerror}") from None
    else:
        fuse = fuse_mounts(config)
        fuse_fds, fuse_warnings = open_devices(fuse)  # in our user namespace, before pivot_root
        verified = None
        if plan.verified_roots is not None:
            verified = VerifiedMount(
                os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC), config.uid, config.gid,
                lambda fd: send_fds(channel, marshal.dumps({"verified": True}), [fd]))
        _report_stage(channel, "view", "the enclave's file system view to be built")
        result = build_view(plan, newroot, config.start_dir, verified)
        if verified is not None:
            os.close(verified.fd)  # the supervisor's server has its own
        if not config.extra_runtime_domain_names_conf:
            sethostname("localhost")  # Gramine's; the host's name with that option
        if fuse:
            _report_stage(channel, "FUSE mounts", "mounting "
                          + ", ".join(mount.path for mount in fuse))
        fuse_ids = mount_all(fuse, fuse_fds, config.uid, config.gid)
    # The view's root travels as an fd: the supervisor never derives it from a TID (reusable).
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    union = [result.union_upper_fd] if result.union_upper_fd >= 0 else []
    send_fds(channel, marshal.dumps({"writable": result.writable_mount_ids,
                                     "verified": result.verified_mount_ids,
                                     "private": result.private_mount_ids + fuse_ids,
                                     "union": result.union_mount_id,
                                     "warnings": fuse_warnings}),
             [root, *union, *fuse_fds])
    os.close(root)
    for fd in union:
        os.close(fd)
    nested = [fd for index, fd in enumerate(fuse_fds) if is_nested(fuse, index)]
    for fd in fuse_fds:
        if fd not in nested:  # a nested mount's descriptor waits for its mount
            os.close(fd)
    if any(config.start_dir.startswith(m.path.rstrip("/") + "/") or config.start_dir == m.path
           for m in fuse):
        os.chdir(config.start_dir)  # into the mount itself, now that it is served
    program = os.fork()
    if program == 0:
        try:
            _program(config, confinement, channel, identity)
        except BaseException as exc:
            detail = exc.strerror if isinstance(exc, OSError) else str(exc)
            os.write(2, f"[pylos] error: cannot start {config.entrypoint}: {detail}\n".encode())
        os._exit(127)
    channel.close()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(program, s))
    if identity:
        staging_channel.close()
        code = _serve_until_exit(program, None, staging_channel)
        from pylos.runtime.identity import kill_descendants

        kill_descendants()  # no PID namespace to end them
        return code

    def mount_nested() -> list[int]:
        ids = mount_all(fuse, fuse_fds, config.uid, config.gid, nested=True)
        for fd in nested:
            os.close(fd)
        nested.clear()
        return ids

    return _serve_until_exit(program, StagingArea(result.staging_dirfd, mount_nested),
                             staging_channel)


def _report_stage(channel: Channel, name: str, waiting_for: str) -> None:
    """Tell the supervisor's watchdog which start-up stage init is in."""
    channel.send(marshal.dumps({"stage": (name, waiting_for)}))


def _serve_until_exit(program: int, staging: StagingArea | None,
                      channel: Channel) -> int:
    """Init's loop: reap every process (PID 1 of the enclave), stage executables for the
    supervisor, and return the program's exit status once it has exited."""
    wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)
    waiting_on = [wakeup_read, channel] if staging is not None else [wakeup_read]
    while True:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 1
            if pid == 0:
                break
            if pid == program:
                return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else (
                    128 + os.WTERMSIG(status))
        for ready in select.select(waiting_on, [], [])[0]:
            if ready == wakeup_read:
                with contextlib.suppress(BlockingIOError):
                    os.read(wakeup_read, 4096)
            elif staging is not None and not staging.serve_one(channel):
                waiting_on.remove(channel)


def _namespace_creator(config: EnclaveConfig, plan: ViewPlan, newroot: str,
                       confinement: Confinement, channel: Channel,
                       staging_channel: Channel, identity: bool) -> int:
    _set_pdeathsig()
    # Out of the supervisor's process group: kill(0, sig) from init's group must not reach it.
    os.setpgid(0, 0)
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    if not identity:
        from pylos.runtime.identity import UNAVAILABLE_ERRNOS

        def map_range() -> bool:  # by the supervisor, still outside (`_receive_enclave`)
            channel.send(marshal.dumps({"map_ids": True}))
            return channel.recv(1) == b"1"

        try:
            enter_user_namespace(config.uid, config.gid, map_range)
        except OSError as exc:
            if exc.errno not in UNAVAILABLE_ERRNOS:
                raise
            channel.send(marshal.dumps({"namespaces": f"unshare: {os.strerror(exc.errno)}"}))
            return 1
    init = os.fork()
    if init == 0:
        code = 1
        try:
            code = _init(config, plan, newroot, confinement, channel, staging_channel,
                         identity)
        except PylosError as exc:
            channel.send(marshal.dumps({"error": str(exc)}))
        except OSError as exc:
            channel.send(marshal.dumps({"error": f"building the enclave view: {exc}"}))
        os._exit(code)
    channel.close()
    staging_channel.close()
    _, status = os.waitpid(init, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(
        status)


def run(app: str, host_args: list[str],
        configure: Callable[[LoadedEnclave, EnclaveConfig], None] | None = None,
        options: RunOptions | None = None) -> int:
    """Run APP in its enclave; returns the exit status a shell would report.

    `configure` may adjust the resolved configuration of the verified enclave before anything
    starts (a workspace's `pylos run /bin/app` sets the program, argv and environment);
    `options` are those of the command line (`pylos run --sgx/--direct/--log-level/--trace`).
    """
    from pylos.cli.run_args import RunOptions
    from pylos.runtime.load import load_enclave

    options = options or RunOptions()
    watchdog = StartupWatchdog(start_timeout())
    loaded = load_enclave(app, options.mode)
    config = build_config(loaded.manifest, host_args, dict(os.environ), os.getcwd())
    if configure is not None:
        configure(loaded, config)
    if options.log_level is not None:
        config.log_level = options.log_level
    if options.trace_file is not None:
        config.log_file = options.trace_file
    config.fuse = FuseSetup.prepare(config, loaded.manifest.data, loaded.report_body)
    log = Log(config)
    if config.log_level != "none":
        if not loaded.sgx_mode:
            what = "--direct" if options.mode == "direct" else "no .manifest.sgx"
            print(f"[pylos] notice: running {loaded.manifest.source} unsigned ({what}: "
                  "development mode, as gramine-direct; no measurement, so no SGX reports, "
                  "quotes or sealing keys)", file=sys.stderr)
        elif config.insecure:
            print("[pylos] this enclave has insecure settings (fine for development, never "
                  "for production):\n" + "".join(f"  - {item}\n" for item in config.insecure),
                  end="", file=sys.stderr)
    for message in config.messages:
        level, _, text = message.partition(": ")
        log(level, text)
    for warning in unhonoured_keys(loaded.manifest.data):
        log("warning", warning)
    log("warning", f"enclave memory limit (sgx.enclave_size): {config.enclave_size} bytes, "
        "enforced as each process's address-space limit")
    config.fds_limit = _open_files_limit(config.fds_limit, log)

    _replace_unsafe_standard_descriptors(log)

    verified = verified_view_possible(config)
    program_filter, handlers = filter_for(config, verified)
    _create_allowed_directories(config, log)
    plan = view_plan(config, verified)
    config.verified_roots = plan.verified_roots
    config.verified_mount_points = plan.verified_mount_points
    if "pylos" in loaded.manifest.data:  # RA-TLS files, provisioned secrets: before the start
        from pylos.attest.prestart import prepare_enclave

        with watchdog.stage("attestation set-up", "RA-TLS credentials and secret "
                            "provisioning (pylos.ratls, pylos.secret_provisioning)"):
            prepare_enclave(loaded, config, plan, log)
    from pylos.runtime import landlock

    landlock_abi = landlock.abi()
    for missing in landlock.missing_features(landlock_abi):
        log("warning", f"this kernel's Landlock lacks {missing}")
    confinement = Confinement(program_filter, view_rules(config, plan), landlock_abi)
    if config.logs("debug"):
        _log_view(log, config, plan, confinement)
    # An empty host directory to mount the view's tmpfs on (tempfile costs 4 ms to import).
    newroot = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"pylos-root-{os.urandom(8).hex()}")
    os.mkdir(newroot, 0o700)
    program_umask = os.umask(0)  # ours is 0: emulated creates apply the program's own umask
    try:
        return _start(config, log, plan, confinement, handlers, newroot,
                      program_umask, watchdog, identity=False)
    except _NamespacesUnavailable as exc:
        from pylos.runtime.identity import check_identity_possible
        from pylos.runtime.namespaces import user_namespace_hint

        check_identity_possible(config, exc.reason, user_namespace_hint())
        log("warning", f"Linux namespaces are unavailable here ({exc.reason}): running with "
            "identity mounts (each enclave path is the same host path): no exec staging, the "
            "host's /proc, no /dev/attestation, loader.uid/gid not applied "
            "(see docs/runtime.md)")
        config.fuse.mounts = []
        if verified:  # no mount namespace, no view: every open is trapped
            program_filter, handlers = filter_for(config)
            plan = view_plan(config)
            config.verified_roots = None
        if not landlock_abi:
            raise PylosError("Linux namespaces and Landlock are both unavailable here: pylos "
                             "cannot confine the program's file system calls") from None
        from pylos.runtime.identity import landlock_rules

        confinement = Confinement(program_filter, tuple(landlock_rules(config)), landlock_abi)
        return _start(config, log, plan, confinement, handlers, newroot,
                      program_umask, watchdog, identity=True)
    finally:
        os.rmdir(newroot)


class _NamespacesUnavailable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _start(config: EnclaveConfig, log: Log, plan: ViewPlan, confinement: Confinement,
           handlers: dict, newroot: str, program_umask: int, watchdog: StartupWatchdog,
           identity: bool) -> int:
    """Start the enclave's processes and supervise them until the program has ended."""
    supervisor_end, child_end = pair()
    staging_end, init_staging_end = pair()
    creator = os.fork()
    if creator == 0:
        supervisor_end.close()
        staging_end.close()
        code = 1
        os.umask(program_umask)
        try:
            code = _namespace_creator(config, plan, newroot, confinement, child_end,
                                      init_staging_end, identity)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                child_end.send(marshal.dumps({"error": f"cannot create namespaces: {exc}"}))
        os._exit(code)
    child_end.close()
    init_staging_end.close()
    if identity:
        staging_end.close()
    return _supervise(config, log, handlers, supervisor_end, creator,
                      None if identity else Stager(staging_end), watchdog)


def _supervise(config: EnclaveConfig, log: Log, handlers: dict, channel: Channel,
               creator: int, stager: Stager | None, watchdog: StartupWatchdog) -> int:
    from pylos.runtime.identity import IdentityPolicy
    from pylos.runtime.policy import FilePolicy, TrustedFiles, UnionRoot
    from pylos.runtime.supervisor import Supervisor

    sigterm_injected = False
    supervisor: Supervisor | None = None

    def forward(sig: int, _frame) -> None:
        nonlocal sigterm_injected
        target = supervisor.main_pid if supervisor is not None else None
        if sig == signal.SIGTERM:
            if config.enable_sigterm_injection and not sigterm_injected and target:
                sigterm_injected = True
                _kill(-target, signal.SIGTERM)
                return
            _kill(creator, signal.SIGKILL)  # ends the enclave: PDEATHSIG does the rest
            return
        if target:
            _kill(-target, sig)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    # The program may own the terminal (foreground group) and set TOSTOP on it: our log lines
    # would then stop us (SIGTTOU), or fail with EIO in an orphaned group. Ignored, they print.
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)

    try:
        view, root_fds, fds = _receive_enclave(config, log, channel, creator, stager, watchdog)
    except BaseException as exc:
        if config.verified_view is not None:  # started early, maybe given no view to serve
            config.verified_view.stop()
        if isinstance(exc, StartupStalled):
            _kill(creator, signal.SIGKILL)  # ends the enclave: PDEATHSIG does the rest
            os.waitpid(creator, 0)
        raise
    finally:
        watchdog.disarm()
    if view is None:
        if config.verified_view is not None:
            config.verified_view.stop()
        _, status = os.waitpid(creator, 0)
        config.fuse.stop()  # started before the program failed; its mounts are gone now
        return _exit_code(status)
    listener = seccomp.Listener(fds[0])
    listener.enable_sync_wake_up()
    union = UnionRoot(view["union"], root_fds[1]) if _union_fds(config) else None
    policy = FilePolicy(TrustedFiles(config.trusted, log,
                                     config.host_path_of, config.decrypt_trusted, union),
                        set(view["writable"]), set(view["private"]), config.allow_all_but_log, log,
                        IdentityPolicy(config) if stager is None else None)
    policy.trusted.verified_mounts = set(view["verified"])
    supervisor = Supervisor(listener, config, policy, log, handlers, root_fds[0], stager)
    served = config.verified_view
    if served is not None and served.server_pid is not None:
        def view_server_ended() -> None:
            if served.ended_badly():
                log("error", "the verified view's server has died: ending the enclave (its "
                    "files would no longer be served)")
                _kill(creator, signal.SIGKILL)  # ends the enclave: PDEATHSIG does the rest

        supervisor.watch(os.pidfd_open(served.server_pid), view_server_ended)
    try:
        supervisor.run()
    finally:
        os.close(listener.fd)
        if served is not None:
            served.stop()
        log("debug", f"trusted files verified in this run: {policy.trusted.bytes_hashed} bytes "
            "hashed")
    _, status = os.waitpid(creator, 0)
    config.fuse.stop()  # the enclave's mounts are gone: flush every encrypted file
    if supervisor.out_of_memory and status != 0:
        log("error", f"the program ran out of enclave memory (sgx.enclave_size = "
            f"{config.enclave_size >> 20} MiB); raise sgx.enclave_size if it needs more")
    if os.isatty(0):
        _restore_foreground()
    return _exit_code(status)


def _receive_enclave(config: EnclaveConfig, log: Log, channel: Channel, creator: int,
                     stager: Stager | None, watchdog: StartupWatchdog
                     ) -> tuple[dict | None, list[int], list[int]]:
    """Follow the enclave's start stage by stage, each under the watchdog's deadline, up to
    its file servers running: (the view's description, its root and FUSE device fds, the
    listener fd); no view when the program could not start."""
    watchdog.enter("namespaces", "the enclave's user, mount and PID namespaces")
    while True:
        message, root_fds = recv_fds(
            channel, 65536, 1 + _union_fds(config) + len(config.fuse.mounts))
        view = marshal.loads(message) if message else {"error": "the enclave did not start"}
        if view.get("map_ids") is True:  # the creator has its user namespace: map its ids
            mapped = map_id_range(creator, config.uid, config.gid)
            channel.send(b"1" if mapped else b"0")
            if mapped and config.verified_roots is not None:
                _start_verified_view(config, log, creator, channel)
            continue
        if view.get("verified") is True:  # init has mounted it: its server serves it
            assert config.verified_view is not None
            config.verified_view.serve_mount(root_fds[0])
            continue
        if "stage" not in view:
            break
        watchdog.enter(*view["stage"])  # init reports each of its stages as it begins it
    if "error" in view or "namespaces" in view:
        os.waitpid(creator, 0)
        if "namespaces" in view:
            raise _NamespacesUnavailable(view["namespaces"])
        raise PylosError(view["error"])
    if stager is not None:  # identity mode has no user namespace to join
        join_user_namespace(creator)
    # The file servers start while the program confines itself: its exec (trapped) waits for
    # the supervisor, which waits for them.
    with watchdog.stage("file servers", "the servers of the encrypted mounts and "
                        "/dev/attestation to start"):
        config.fuse.start(root_fds[1 + _union_fds(config):], root_fds[0], log,
                          close=[channel.fileno()])
    watchdog.enter("program start", "the program's process to confine itself (Landlock, "
                   "seccomp) and hand over its listener")
    _, fds = recv_fds(channel, 16, 1)
    channel.close()
    if not fds:
        return None, root_fds, fds
    for warning in view["warnings"]:
        log("warning", warning)
    if config.fuse.has_nested and stager is not None:
        with watchdog.stage("nested mounts", "the encrypted mounts inside others"):
            view["private"] += stager.mount_nested()
            config.fuse.serve_nested()
    return view, root_fds, fds


def _start_verified_view(config: EnclaveConfig, log: Log, creator: int,
                         channel: Channel) -> None:
    """The enclave's user namespace exists: start the verified view's server, in a process
    of its own, while init builds the view (it serves the view once init has mounted it)."""
    from pylos.runtime.fs.verified import VerifiedFs, VerifiedView
    from pylos.runtime.policy import TrustedFiles

    roots = config.verified_roots or []

    def driver() -> VerifiedFs:
        return VerifiedFs(roots, TrustedFiles(config.trusted, log), config.trusted,
                          config.allowed, config.allow_all_but_log, config.view_path_of, log,
                          mount_points=config.verified_mount_points)

    config.verified_view = VerifiedView()
    config.verified_view.start(creator, driver, log, close=[channel.fileno()])


def _union_fds(config: EnclaveConfig) -> int:
    """How many descriptors of a union root (its upper layer) follow the view's root."""
    return 1 if config.root.type == "union" else 0


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(
        status)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _restore_foreground() -> None:
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.tcsetpgrp(0, os.getpgrp())
    signal.signal(signal.SIGTTOU, previous)
