"""Run a program natively once and record what an enclave manifest needs to know about it.

The program runs under a seccomp user-notification filter (the runtime's own machinery,
`runtime/seccomp.py`) that traps only the calls that name paths or change what the manifest
sizes: the open family, exec, the calls that create, remove or rename directory entries,
thread creation, executable mappings, exit, RLIMIT_STACK changes, set-id calls, a SIGTERM
handler being installed and the socket calls that name addresses. Each notification is
recorded (the path read from the caller's memory, resolved against its cwd or dirfd through
/proc) and answered with CONTINUE: the
kernel then runs the call itself, so the program behaves exactly as it would without pylos.
Nothing is emulated or refused, and the filter is inherited by every process and thread the
program starts, so children are followed without ptrace's stops and signal bookkeeping.

The caller is blocked while its call is recorded, so what the path names is judged before the
call runs: an open of a path that does not exist is a probe (a library search) unless it
creates the file. Peak threads and address space come from /proc/<pid>/status (Threads,
VmPeak, VmStk), read at each thread creation, exec and exit, and every quarter of a second.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import shutil
import signal
import socket
import stat
import struct
import time
from collections.abc import Callable, Mapping

from pylos.errors import PylosError
from pylos.runtime import seccomp
from pylos.runtime.seccomp import ArgRule, Listener, Notification
from pylos.runtime.syscalls.processes import CLONE_THREAD, interpreter_of
from pylos.runtime.syscalls.table import SYSCALLS
from pylos.runtime.target import read_memory, read_path
from pylos.trace.record import (
    CREATED,
    EXECUTED,
    LISTED,
    LOOKED_UP,
    MAPPED,
    READ,
    REMOVED,
    WRITTEN,
    Run,
)

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
O_TMPFILE_BIT = os.O_TMPFILE & ~os.O_DIRECTORY
PROT_EXEC = 0x4
MAP_ANONYMOUS = 0x20
RLIMIT_STACK = 3
SIG_DFL, SIG_IGN = 0, 1
RLIM_INFINITY = (1 << 64) - 1
NO_ID = 0xFFFFFFFF  # -1 in a 32-bit id argument: "unchanged"
SAMPLE_INTERVAL = 0.25
MAX_INTERPRETER_DEPTH = 4
PR_SET_PDEATHSIG = 1
# Paths the enclave provides itself (runtime/namespaces.py): never mounted from the host.
PROVIDED = ("/proc", "/dev", "/sys")
_PTS = re.compile(r"^/dev/pts/\d+$")

_libc_syscall = seccomp._libc.syscall


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def find_command(name: str) -> str:
    """The absolute path of the command `name` (as a shell finds it), or a PylosError."""
    if "/" in name:
        path = os.path.abspath(name)
        if not os.path.exists(path):
            raise PylosError(f"command not found: '{name}' does not exist")
    else:
        found = shutil.which(name)
        if found is None:
            raise PylosError(f"command not found: '{name}' is not in PATH")
        path = os.path.abspath(found)
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise PylosError(f"cannot execute '{path}': not an executable file")
    return path


def resolve(tid: int, dirfd: int, raw: bytes) -> str | None:
    """The absolute, normalized path a call of thread `tid` names (relative paths against its
    cwd or `dirfd`); None when the base is not a path (a socket, a pipe) or is gone."""
    path = os.fsdecode(raw)
    if not path.startswith("/"):
        link = f"/proc/{tid}/cwd" if dirfd == AT_FDCWD else f"/proc/{tid}/fd/{dirfd}"
        try:
            base = os.readlink(link)
        except OSError:
            return None
        if not base.startswith("/"):
            return None
        path = os.path.join(base, path) if path else base
    return "/" + os.path.normpath(path).lstrip("/")


def provided(path: str) -> bool:
    return any(path == root or path.startswith(root + "/") for root in PROVIDED)


class Observer:
    """Records the notifications of one run into `run`."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.listener: Listener | None = None  # attach(): once the program has its filter
        self.child = -1
        self.child_started = False  # the child's first exec (leaving pylos's Python) is done
        self.processes: set[int] = set()   # every tgid seen
        self.live: set[int] = set()        # tgids to sample
        self.exec_dirs: set[str] = set()
        self.probed: set[str] = set()
        self.initial_ids = (os.getuid(), os.getgid())
        nr = SYSCALLS
        at, cwd = 0, None  # dirfd argument index; None: relative to the cwd
        self.handlers: dict[int, Callable[[Notification], None]] = {
            nr["open"]: lambda n: self.opened(n, cwd, 0, n.args[1]),
            nr["openat"]: lambda n: self.opened(n, at, 1, n.args[2]),
            nr["openat2"]: self.openat2,
            nr["creat"]: lambda n: self.opened(n, cwd, 0, os.O_CREAT | os.O_WRONLY),
            nr["truncate"]: lambda n: self.entry(n, cwd, 0, WRITTEN),
            nr["execve"]: lambda n: self.executed(n, AT_FDCWD, n.args[0], 0),
            nr["execveat"]: lambda n: self.executed(n, _int32(n.args[0]), n.args[1],
                                                    n.args[4]),
            nr["mkdir"]: lambda n: self.entry(n, cwd, 0, CREATED),
            nr["mkdirat"]: lambda n: self.entry(n, at, 1, CREATED),
            nr["mknod"]: lambda n: self.entry(n, cwd, 0, CREATED),
            nr["mknodat"]: lambda n: self.entry(n, at, 1, CREATED),
            nr["unlink"]: lambda n: self.entry(n, cwd, 0, REMOVED),
            nr["rmdir"]: lambda n: self.entry(n, cwd, 0, REMOVED),
            nr["unlinkat"]: lambda n: self.entry(n, at, 1, REMOVED),
            nr["rename"]: lambda n: (self.entry(n, cwd, 0, REMOVED),
                                     self.entry(n, cwd, 1, CREATED)),
            nr["renameat"]: self.renamed,
            nr["renameat2"]: self.renamed,
            nr["link"]: lambda n: self.entry(n, cwd, 1, CREATED),
            nr["linkat"]: lambda n: self.entry(n, 2, 3, CREATED),
            nr["symlink"]: lambda n: self.entry(n, cwd, 1, CREATED),
            nr["symlinkat"]: lambda n: self.entry(n, 1, 2, CREATED),
            nr["clone"]: self.thread_created,  # the filter passes only CLONE_THREAD
            nr["clone3"]: self.clone3,
            nr["mmap"]: self.mapped,  # the filter passes only PROT_EXEC
            nr["exit_group"]: lambda n: self.sample(n.pid),
            nr["setrlimit"]: lambda n: self.stack_limit(n, n.args[1]),  # RLIMIT_STACK only
            nr["prlimit64"]: lambda n: self.stack_limit(n, n.args[2]),
            nr["setuid"]: lambda n: self.switched(n.args[0], None),
            nr["setgid"]: lambda n: self.switched(None, n.args[0]),
            nr["setreuid"]: lambda n: self.switched(n.args[1], None),
            nr["setregid"]: lambda n: self.switched(None, n.args[1]),
            nr["setresuid"]: lambda n: self.switched(n.args[1], None),
            nr["setresgid"]: lambda n: self.switched(None, n.args[1]),
            nr["rt_sigaction"]: self.sigterm_handler,  # the filter passes only SIGTERM
            nr["bind"]: self.bound,
            nr["connect"]: self.connected,
            nr["listen"]: self.listened,
        }

    def attach(self, listener: Listener, child: int) -> None:
        self.listener = listener
        self.child = child

    # -- the filter -----------------------------------------------------------------------

    def bpf(self) -> bytes:
        notify = seccomp.RET_USER_NOTIF
        arg_rules = {  # syscall: (argument, bits or value, compared for equality)
            "clone": (0, CLONE_THREAD, False),
            "mmap": (2, PROT_EXEC, False),
            "setrlimit": (0, RLIMIT_STACK, True),
            "prlimit64": (1, RLIMIT_STACK, True),
            "rt_sigaction": (0, signal.SIGTERM, True),
        }
        rules = [ArgRule(SYSCALLS[name], arg, ((value, notify),), seccomp.RET_ALLOW, equals)
                 for name, (arg, value, equals) in arg_rules.items()]
        ruled = {rule.nr for rule in rules}
        actions = {nr: notify for nr in self.handlers if nr not in ruled}
        return seccomp.build_filter(actions, rules)

    # -- serving ----------------------------------------------------------------------------

    def serve(self) -> None:
        """Record and CONTINUE every notification until no process of the run is left."""
        listener = self.listener
        assert listener is not None, "attach() the listener first"
        poller = select.poll()
        poller.register(listener.fd, select.POLLIN)
        next_sample = time.monotonic() + SAMPLE_INTERVAL
        while True:
            now = time.monotonic()
            if now >= next_sample:
                for tgid in sorted(self.live):
                    self.sample(tgid)
                next_sample = now + SAMPLE_INTERVAL
            events = poller.poll(max(0.0, next_sample - now) * 1000)
            if any(event & (select.POLLHUP | select.POLLERR) for _, event in events):
                return
            if not events:
                continue
            try:
                notification = listener.receive()
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EINTR):
                    continue  # the caller went away before we got to it
                raise
            try:
                self.note_process(notification)
                handler = self.handlers.get(notification.nr)
                if handler is not None:
                    handler(notification)
            except OSError:
                pass  # the caller vanished mid-way (its /proc entries are gone): nothing to see
            finally:
                listener.allow(notification.id)

    def note_process(self, n: Notification) -> None:
        tgid = _status(n.pid).get("Tgid", n.pid)
        self.processes.add(tgid)
        if tgid != self.child or self.child_started:
            self.live.add(tgid)

    # -- handlers -----------------------------------------------------------------------------

    def path(self, n: Notification, dirfd_arg: int | None, path_arg: int) -> str | None:
        try:
            raw = read_path(n.pid, n.args[path_arg])
        except OSError:
            return None  # the kernel answers EFAULT or ENAMETOOLONG: nothing was named
        dirfd = AT_FDCWD if dirfd_arg is None else _int32(n.args[dirfd_arg])
        return resolve(n.pid, dirfd, raw)

    def record(self, path: str, letter: str) -> None:
        if provided(path):
            if path.startswith("/proc/") or path.startswith("/dev/fd/") or path in (
                    "/dev/stdin", "/dev/stdout", "/dev/stderr"):
                path = "/proc"  # process-specific names: that /proc was used is enough
            elif _PTS.match(path):
                path = "/dev/pts/"
        self.run.use(path, letter)

    def opened(self, n: Notification, dirfd_arg: int | None, path_arg: int, flags: int) -> None:
        path = self.path(n, dirfd_arg, path_arg)
        if path is None:
            return
        flags = _int32(flags)
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if flags & os.O_PATH:
            letter = LOOKED_UP if st is not None else None
        elif flags & O_TMPFILE_BIT:
            letter = WRITTEN  # an unnamed file in this directory: it must be writable
        elif st is None:
            letter = CREATED if flags & os.O_CREAT else None
        elif stat.S_ISDIR(st.st_mode):
            letter = LISTED
        elif flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            letter = WRITTEN
        else:
            letter = READ
        if letter is None:
            if not provided(path):
                self.probed.add(path)
            return
        self.record(path, letter)

    def openat2(self, n: Notification) -> None:
        try:
            flags = struct.unpack("<Q", read_memory(n.pid, n.args[2], 8))[0]
        except OSError:
            return
        self.opened(n, 0, 1, flags)

    def entry(self, n: Notification, dirfd_arg: int | None, path_arg: int, letter: str) -> None:
        path = self.path(n, dirfd_arg, path_arg)
        if path is None:
            return
        if letter == CREATED and os.path.lexists(path):
            return  # EEXIST: nothing is made
        if letter in (REMOVED, WRITTEN) and not os.path.lexists(path):
            return  # ENOENT
        self.record(path, letter)

    def renamed(self, n: Notification) -> None:
        self.entry(n, 0, 1, REMOVED)
        self.entry(n, 2, 3, CREATED)

    def executed(self, n: Notification, dirfd: int, path_ptr: int, flags: int) -> None:
        tgid = _status(n.pid).get("Tgid", n.pid)
        if tgid == self.child and not self.child_started:
            self.child_started = True  # pylos's Python image: not the program's to measure
        else:
            self.sample(n.pid)  # the image being replaced
        try:
            raw = read_path(n.pid, path_ptr)
        except OSError:
            return
        if not raw and flags & AT_EMPTY_PATH:  # fexecve: the file behind the descriptor
            try:
                path = os.readlink(f"/proc/{n.pid}/fd/{dirfd}")
            except OSError:
                return
        else:
            path = resolve(n.pid, dirfd, raw)
        if path is None or not os.path.isfile(path):
            if path is not None:
                self.probed.add(path)  # execvp walks PATH: only the found one runs
            return
        self.exec_dirs.add(os.path.dirname(path))
        self.record(path, EXECUTED)
        self.interpreters(path, n.pid)

    def interpreters(self, path: str, tid: int) -> None:
        """The ELF interpreter and `#!` interpreters the kernel maps for an exec of `path`."""
        for _ in range(MAX_INTERPRETER_DEPTH):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return
            try:
                interpreter = interpreter_of(fd)
            except OSError:
                interpreter = None
            finally:
                os.close(fd)
            if interpreter is None:
                return
            path = resolve(tid, AT_FDCWD, interpreter) or ""
            if not os.path.isfile(path):
                return
            self.record(path, EXECUTED)

    def thread_created(self, n: Notification) -> None:
        status = _status(n.pid)
        if "Threads" in status:
            self.run.peak_threads = max(self.run.peak_threads, status["Threads"] + 1)

    def clone3(self, n: Notification) -> None:
        try:
            flags = struct.unpack("<Q", read_memory(n.pid, n.args[0], 8))[0]
        except OSError:
            return
        if flags & CLONE_THREAD:
            self.thread_created(n)

    def mapped(self, n: Notification) -> None:
        fd = _int32(n.args[4])
        if n.args[3] & MAP_ANONYMOUS or fd < 0:
            return
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{n.pid}/fd/{fd}")
            if target.startswith("/") and os.path.isfile(target):
                self.record(target, MAPPED)

    def sample(self, tid: int) -> None:
        status = _status(tid)
        if not status:
            self.live.discard(tid)
            return
        run = self.run
        run.peak_threads = max(run.peak_threads, status.get("Threads", 1))
        run.peak_address_space_mib = max(run.peak_address_space_mib,
                                         -(-status.get("VmPeak", 0) // 1024))
        run.peak_stack_kib = max(run.peak_stack_kib, status.get("VmStk", 0))

    def stack_limit(self, n: Notification, pointer: int) -> None:
        if not pointer:
            return  # a query
        try:
            soft = struct.unpack("<QQ", read_memory(n.pid, pointer, 16))[0]
        except OSError:
            return
        if soft != RLIM_INFINITY:
            self.run.stack_limit = max(self.run.stack_limit or 0, soft)

    def sigterm_handler(self, n: Notification) -> None:
        if not n.args[1]:
            return  # a query
        with contextlib.suppress(OSError):
            handler = struct.unpack("<Q", read_memory(n.pid, n.args[1], 8))[0]
            if handler not in (SIG_DFL, SIG_IGN):
                self.run.handles_sigterm = True

    def switched(self, uid: int | None, gid: int | None) -> None:
        initial_uid, initial_gid = self.initial_ids
        user = list(self.run.user or self.initial_ids)
        if uid is not None and uid & NO_ID != NO_ID and uid & NO_ID != initial_uid:
            user[0] = uid & NO_ID
        if gid is not None and gid & NO_ID != NO_ID and gid & NO_ID != initial_gid:
            user[1] = gid & NO_ID
        if tuple(user) != self.initial_ids:
            self.run.user = user

    # -- sockets --------------------------------------------------------------------------------

    def bound(self, n: Notification) -> None:
        address = self.sockaddr(n)
        if address is None:
            return
        family, where = address
        if family == socket.AF_UNIX:
            if where.startswith("/") and not os.path.lexists(where):
                self.record(where, CREATED)
            return
        kind = _socket_kind(n.pid, _int32(n.args[0]))
        if kind is not None and kind.startswith("udp"):
            self.run_network(f"bind {kind} {where}")

    def connected(self, n: Notification) -> None:
        address = self.sockaddr(n)
        if address is None:
            return
        family, where = address
        if family == socket.AF_UNIX:
            if where.startswith("/") and os.path.exists(where):
                self.record(where, LOOKED_UP)
            return
        kind = _socket_kind(n.pid, _int32(n.args[0])) or "inet"
        self.run_network(f"connect {kind} {where}")

    def listened(self, n: Notification) -> None:
        fd = _int32(n.args[0])
        kind = _socket_kind(n.pid, fd)
        if kind is None or kind.startswith("unix"):
            return
        with contextlib.suppress(OSError), _borrowed_socket(n.pid, fd) as sock:
            self.run_network(f"listen {kind} {_format_address(sock.getsockname())}")

    def run_network(self, line: str) -> None:
        if line not in self.run.network:
            self.run.network = sorted({*self.run.network, line})

    def sockaddr(self, n: Notification) -> tuple[int, str] | None:
        length = min(n.args[2] & 0xFFFFFFFF, 128)
        if length < 2:
            return None
        try:
            data = read_memory(n.pid, n.args[1], length)
        except OSError:
            return None
        family = struct.unpack_from("<H", data)[0]
        if family == socket.AF_UNIX:
            name = data[2:]
            if not name or name[0] == 0:
                return None  # abstract or unnamed: no file
            path = resolve(n.pid, AT_FDCWD, name.split(b"\0", 1)[0])
            return (family, path) if path else None
        if family == socket.AF_INET and length >= 8:
            port = struct.unpack_from(">H", data, 2)[0]
            return family, f"{socket.inet_ntop(socket.AF_INET, data[4:8])}:{port}"
        if family == socket.AF_INET6 and length >= 24:
            port = struct.unpack_from(">H", data, 2)[0]
            return family, f"[{socket.inet_ntop(socket.AF_INET6, data[8:24])}]:{port}"
        return None


def _status(tid: int) -> dict[str, int]:
    """The numeric fields of /proc/<tid>/status that matter here (kB for sizes)."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{tid}/status", "rb") as status:
            for line in status:
                name, _, value = line.partition(b":")
                if name in (b"Tgid", b"Threads", b"VmPeak", b"VmStk"):
                    fields[name.decode()] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return fields


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            return stat_file.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


@contextlib.contextmanager
def _borrowed_socket(tid: int, fd: int):
    """A duplicate of thread `tid`'s socket `fd` (pidfd_getfd), to ask it what it is."""
    pidfd = os.pidfd_open(_status(tid).get("Tgid", tid))
    try:
        dup = _libc_syscall(SYSCALLS["pidfd_getfd"], pidfd, fd, 0)
        if dup < 0:
            raise OSError(errno.EBADF, "pidfd_getfd")
    finally:
        os.close(pidfd)
    sock = socket.socket(fileno=dup)
    try:
        yield sock
    finally:
        sock.detach()
        os.close(dup)


def _socket_kind(tid: int, fd: int) -> str | None:
    """"tcp", "tcp6", "udp", "udp6", "unix" (stream or datagram) or None."""
    try:
        with _borrowed_socket(tid, fd) as sock:
            family, kind = sock.family, sock.type
    except OSError:
        return None
    if family == socket.AF_UNIX:
        return "unix"
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    name = "tcp" if kind == socket.SOCK_STREAM else "udp"
    return name + ("6" if family == socket.AF_INET6 else "")


def _format_address(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def observe(argv: list[str], env: Mapping[str, str] | None = None) -> Run:
    """Run `argv` natively (inheriting stdin, stdout and stderr), recording everything it and
    its children do that a manifest must cover; returns the run."""
    if not argv:
        raise PylosError("no command given: pylos trace [OPTIONS] -- CMD [ARGS]...")
    executable = find_command(argv[0])
    run = Run(argv=list(argv), entrypoint=executable, cwd=os.getcwd())
    environ = dict(os.environ if env is None else env)
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    error_reader, error_writer = os.pipe()
    observer = Observer(run)
    bpf = observer.bpf()
    # The program gets SIGINT and SIGQUIT from the terminal itself (it is in our process
    # group): we ignore them and wait for it. SIGTERM and SIGHUP sent to us are passed on.
    previous = {sig: signal.getsignal(sig) for sig in
                (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP)}
    child = os.fork()
    if child == 0:
        _start_child(child_end, error_writer, bpf, executable, argv, environ)
    os.close(error_writer)
    child_end.close()

    def forward(sig: int, _frame) -> None:
        # To the program; once it has exited (a daemon that forked away), to what it left.
        targets = [child] if _alive(child) else sorted(observer.live - {child})
        for target in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, sig)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGHUP, forward)
    try:
        _, fds, _, _ = socket.recv_fds(parent_end, 16, 1)
        parent_end.close()
        if fds:
            listener = Listener(fds[0])
            listener.enable_sync_wake_up()
            observer.attach(listener, child)
            try:
                observer.serve()
            finally:
                os.close(listener.fd)
        _, status = os.waitpid(child, 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    with os.fdopen(error_reader, "rb") as errors:
        failure = errors.read()
    if failure:
        raise PylosError(f"cannot run '{executable}': {failure.decode(errors='replace')}")
    if not fds:
        raise PylosError("cannot observe the program: the seccomp filter could not be installed"
                         " (`pylos doctor` checks what this machine offers)")
    run.exit_status = (os.waitstatus_to_exitcode(status) if os.WIFEXITED(status)
                       else 128 + os.WTERMSIG(status))
    run.processes = len(observer.processes)
    run.probes = len(observer.probed - set(run.paths))
    search = [os.path.normpath(d) for d in environ.get("PATH", "").split(":") if d]
    run.exec_dirs = [d for i, d in enumerate(search)
                     if d in observer.exec_dirs and d not in search[:i]]
    return run


def _start_child(channel: socket.socket, error_pipe: int, bpf: bytes, executable: str,
                 argv: list[str], env: dict[str, str]) -> None:
    """The program's process: confine to the filter, hand over its listener, exec (never
    returns)."""
    try:
        seccomp._libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP,
                    signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        try:
            listener = seccomp.install_filter(bpf)
        except OSError:
            os._exit(127)  # no fds reach the parent: it reports the filter failure
        socket.send_fds(channel, [b"L"], [listener])
        os.close(listener)
        channel.close()
        try:
            os.execve(executable, argv, env)
        except OSError as exc:
            os.write(error_pipe, (exc.strerror or str(exc)).encode())
    finally:
        os._exit(127)
