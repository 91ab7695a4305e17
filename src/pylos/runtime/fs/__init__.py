"""File systems the supervisor serves into the enclave over FUSE (Gramine: one driver per mount
type): `encrypted` mounts (`fs/encrypted.py`) and `/dev/attestation` (`fs/attestation.py`).

How a FUSE mount comes to be (`runtime/launcher.py` calls these, in this order):

1. `FuseSetup.prepare` (supervisor, before anything forks): checks the keys, lists the mounts.
2. `open_devices` (init, inside the enclave's user namespace, before the view is built): one
   `/dev/fuse` descriptor per mount; it must be opened inside that namespace, since the kernel
   requires the descriptor's user namespace to be the mount's.
3. `mount_all` (init, after pivot_root): `mount("pylos", path, "fuse", nosuid|nodev|noexec,
   "fd=N,rootmode=...,allow_other,default_permissions")` on the placeholders the view left
   (a tmpfs directory, or an empty read-only file for a single-file mount).
4. The descriptors travel to the supervisor with the view's root (SCM_RIGHTS); once it has
   dropped its host privileges, `FuseSetup.start` forks the FUSE server process (a thread per
   mount), and `FuseSetup.stop` waits for it to flush everything once the enclave has ended.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable

from pylos.errors import PylosError
from pylos.runtime.keys import KeyStore
from pylos.typing_compat import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pylos.runtime.config import EnclaveConfig, Mount

ATTESTATION_PATH = "/dev/attestation"
MAX_MOUNTS = 64  # descriptors the launch channel carries besides the root
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8


class FuseMount(NamedTuple):
    path: str  # in the view
    kind: str  # "encrypted" or "attestation"
    is_file: bool = False
    mount: Mount | None = None


def encrypted_is_file(mount: Mount) -> bool:
    """A single-file encrypted mount: its host path is a file, or does not exist yet (then the
    file is created on first open, as Gramine does)."""
    assert mount.host is not None
    return not os.path.isdir(mount.host)


def fuse_mounts(config: EnclaveConfig) -> list[FuseMount]:
    """The FUSE mounts of this enclave, in mount order (the same in init and supervisor)."""
    mounts: list[FuseMount] = []
    for m in config.mounts:
        if m.type != "encrypted":
            continue
        # Inside another encrypted directory, a mount whose host path is missing is a
        # directory (made through the outer mount, as Gramine's tests expect of
        # /tmp_enc/mrenclaves); elsewhere a missing path is a file made on first open.
        inside = _inside_a_directory_mount(m.path, mounts)
        is_file = encrypted_is_file(m) and not (inside and not os.path.lexists(m.host or ""))
        mounts.append(FuseMount(m.path, "encrypted", is_file, m))
    return [*mounts, FuseMount(ATTESTATION_PATH, "attestation")]


def open_devices(mounts: list[FuseMount]) -> tuple[list[int], list[str]]:
    """One /dev/fuse descriptor per mount that gets one, and warnings for the log.

    Without /dev/fuse (a container without it, or a host where it is root-only and pylos runs
    as another user) encrypted mounts cannot work: an error. `/dev/attestation` alone is then
    left out with a warning, so programs that do not use it still run.
    """
    fds: list[int] = []
    try:
        for _ in mounts:
            fds.append(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        why = f"cannot open /dev/fuse: {exc.strerror}{_fuse_hint()}"
        if any(m.kind == "encrypted" for m in mounts):
            raise PylosError(f"encrypted mounts need FUSE, and {why}") from None
        return [], [f"{ATTESTATION_PATH} is not available ({why})"]
    return fds, []


def _fuse_hint() -> str:
    try:
        mode = os.stat("/dev/fuse").st_mode
    except OSError:
        return " (load the fuse kernel module, or give the container /dev/fuse)"
    if not mode & 0o006:
        return (f" (it is mode {mode & 0o777:o}; distributions ship it 0666: "
                "`chmod 0666 /dev/fuse` as root)")
    return ""


def is_nested(mounts: list[FuseMount], index: int) -> bool:
    """Whether mount `index` lies inside an earlier FUSE directory mount (Gramine manifests
    often have `/tmp_enc` and `/tmp_enc/mrenclaves`, each with its own key)."""
    return _inside_a_directory_mount(mounts[index].path, mounts[:index])


def _inside_a_directory_mount(path: str, outers: list[FuseMount]) -> bool:
    return any(not outer.is_file and path.startswith(outer.path.rstrip("/") + "/")
               for outer in outers)


def mount_all(mounts: list[FuseMount], fds: list[int], uid: int, gid: int,
              nested: bool = False) -> list[int]:
    """Mount FUSE descriptors on their places in the view (init, after pivot_root); returns
    their mount IDs (the file policy allows opens there).

    First (`nested` False) the mounts that are not inside another FUSE mount. A nested one
    has its mount point inside another FUSE file system, whose server must answer for that
    point to be found: it is mounted (`nested` True) once the servers run, its directory made
    through the outer mount if it is missing."""
    from pylos.runtime.namespaces import mount as do_mount

    chosen = []
    for index, (spec, fd) in enumerate(zip(mounts, fds, strict=False)):
        if is_nested(mounts, index) != nested:
            continue
        chosen.append(spec.path)
        if spec.kind == "attestation" or nested:
            os.makedirs(spec.path, 0o755, exist_ok=True)
        rootmode = "100000" if spec.is_file else "40000"
        options = (f"fd={fd},rootmode={rootmode},user_id={uid},group_id={gid},allow_other,"
                   "default_permissions")
        do_mount("pylos", spec.path, "fuse", MS_NOSUID | MS_NODEV | MS_NOEXEC, options)
    return _mount_ids(chosen)


def _mount_ids(paths: list[str]) -> list[int]:
    """From /proc/self/mountinfo: looking at the mounts themselves would ask the FUSE servers,
    which are not running yet."""
    found: dict[str, int] = {}
    with open("/proc/self/mountinfo", "rb") as table:
        for line in table:
            fields = line.split(b" ")
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]),
                           fields[4]).decode(errors="surrogateescape")
            if point in paths and b" - fuse " in line:
                found[point] = int(fields[0])  # the last one listed is on top
    return [found[p] for p in paths if p in found]


def become_file_server(parent: int, namespace_of: int | None, name: bytes | None = None) -> None:
    """Make a freshly forked process a file server: it dies with its `parent` (PDEATHSIG), the
    signals of the terminal are not for it, with `namespace_of` it joins that process's user
    namespace, giving up the host privileges of `pylos run`, and with `name` it is called
    that (its comm, as `ps` shows it)."""
    import ctypes
    import resource
    import signal

    libc = ctypes.CDLL(None)
    # A server holds descriptors for the program (verified copies, open encrypted files):
    # all it may have.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above: no signal will come
        os._exit(1)
    if name is not None:
        libc.prctl(15, name, 0, 0, 0)  # PR_SET_NAME
    # Out of the supervisor's process group: `kill -TERM -<pylos run>` (a service manager,
    # a benchmark stopping a server) is for the program, which may still write its final
    # state here (redis saves a snapshot on SIGTERM, and will not exit if it cannot). The
    # supervisor ends the server by its pid once the enclave has ended.
    os.setpgid(0, 0)
    # Ctrl-C and friends are for the program; the server ends when the enclave does.
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTSTP,
                signal.SIGTTOU, signal.SIGTTIN):
        signal.signal(sig, signal.SIG_IGN)
    if namespace_of is not None:
        from pylos.runtime.namespaces import join_user_namespace

        join_user_namespace(namespace_of)


class FuseSetup:
    """The supervisor's side: keys, the mounts, and their servers once running."""

    def __init__(self, mounts: list[FuseMount], keys: KeyStore, report_body: bytes | None,
                 attestation_type: str, uid: int, gid: int) -> None:
        self.mounts, self.keys, self.report_body = mounts, keys, report_body
        self.attestation_type, self.uid, self.gid = attestation_type, uid, gid
        self.server_pid: int | None = None
        self._nested_go: int | None = None  # write end: nested mounts mounted, serve them

    @property
    def has_nested(self) -> bool:
        return any(is_nested(self.mounts, i) for i in range(len(self.mounts)))

    def serve_nested(self) -> None:
        """Tell the server that init has mounted the nested mounts: serve them now (their
        descriptors answer EPERM until they are mounted)."""
        if self._nested_go is not None:
            os.write(self._nested_go, b"go")
            os.close(self._nested_go)
            self._nested_go = None

    @classmethod
    def prepare(cls, config: EnclaveConfig, manifest_data: dict,
                report_body: bytes | None) -> FuseSetup:
        """`report_body`: the enclave's identity, packed (SGX mode only)."""
        keys = KeyStore.from_manifest(manifest_data, report_body)
        mounts = fuse_mounts(config)
        for index, spec in enumerate(mounts):
            if spec.is_file and is_nested(mounts, index):
                raise PylosError(f"fs.mounts: the single-file encrypted mount at {spec.path} "
                                 "lies inside another encrypted mount; mount its directory")
            if spec.mount is not None:
                keys.declare(spec.mount.key_name)
                if spec.mount.key_name.startswith("_sgx_") and report_body is None:
                    config.messages.append(
                        f"warning: the encrypted mount at {spec.path} uses the sealing key "
                        f"'{spec.mount.key_name}', which exists only in SGX mode (sign the "
                        "manifest)")
        attestation_type = manifest_data.get("sgx", {}).get("remote_attestation", "none")
        return cls(mounts, keys, report_body, attestation_type, config.uid, config.gid)

    def start(self, fds: list[int], root_fd: int, log: Callable[[str, str], None],
              close: list[int] | None = None) -> None:
        """Serve the mounted descriptors in a process of their own (threads, one per mount).

        Not threads of the supervisor: the supervisor's own opens for the program reach these
        mounts, and a process killed (SIGKILL) while one of its threads waits for a FUSE answer
        that another of its threads owes never dies: the waiting thread is uninterruptible and
        the serving one is gone. A separate server answers, then dies with its parent
        (PDEATHSIG). `close`: the supervisor's descriptors the server must not keep open.
        Keys set (`KeyStore.set`) after this call do not reach the server.
        """
        if not fds:
            return
        go_read, go_write = os.pipe2(os.O_CLOEXEC) if self.has_nested else (-1, -1)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for fd in [*(close or []), *([go_write] if go_write >= 0 else [])]:
                    os.close(fd)
                code = self._serve(parent, fds, root_fd, log, go_read)
            except BaseException as exc:
                log("error", f"the FUSE server failed: {exc!r}")
            finally:
                os._exit(code)
        self.server_pid = pid
        for fd in fds:
            os.close(fd)
        if go_read >= 0:
            os.close(go_read)
            self._nested_go = go_write

    def _serve(self, parent: int, fds: list[int], root_fd: int, log: Callable[[str, str], None],
               nested_go: int) -> int:
        """The FUSE server process: until every mount is gone, then flush and exit."""
        import signal

        from pylos.runtime.fs.attestation import AttestationFs
        from pylos.runtime.fs.fuse import Driver, FuseServer

        become_file_server(parent, None)
        servers: list[FuseServer] = []

        def flush_and_exit(_sig: int, _frame: object) -> None:
            for server in servers:
                with server.lock:
                    server.driver.destroy()
            os._exit(0)

        signal.signal(signal.SIGTERM, flush_and_exit)
        order = sorted(range(len(fds)), key=lambda i: is_nested(self.mounts, i))
        for index in order:
            spec, fd = self.mounts[index], fds[index]
            if is_nested(self.mounts, index) and nested_go >= 0:
                if os.read(nested_go, 2) != b"go":  # the supervisor is gone: serve nothing more
                    break
                os.close(nested_go)
                nested_go = -1
            driver: Driver
            if spec.kind == "encrypted":
                from pylos.runtime.fs.encrypted import EncryptedFs  # cryptography: only here

                assert spec.mount is not None and spec.mount.host is not None
                driver = EncryptedFs(spec.mount.host, spec.mount.bound or spec.mount.host,
                                     spec.mount.key_name, self.keys,
                                     spec.mount.enable_recovery, log, spec.path)
            else:
                attestation = AttestationFs(self.keys, self.report_body,
                                            self.attestation_type, log, self.uid, self.gid)
                attestation.root_fd = root_fd
                if self.report_body is None:
                    log("warning", f"{ATTESTATION_PATH}: development mode (unsigned manifest): "
                        "only keys/ exists; sign the manifest for report and quote")
                driver = attestation
            server = FuseServer(fd, driver, log, spec.path)
            server.start()
            servers.append(server)
        for server in servers:
            assert server.thread is not None
            server.thread.join()  # each flushes its files when its mount goes away
        return 0

    def stop(self, timeout: float = 60.0) -> None:
        """The enclave has ended, so have its mounts: wait for the server to flush and exit
        (after `timeout`, SIGTERM makes it flush and exit at once)."""
        import select

        if self.server_pid is None:
            return
        pidfd = os.pidfd_open(self.server_pid)
        try:
            if not select.select([pidfd], [], [], timeout)[0]:
                os.kill(self.server_pid, 15)
        finally:
            os.close(pidfd)
        os.waitpid(self.server_pid, 0)
        self.server_pid = None
