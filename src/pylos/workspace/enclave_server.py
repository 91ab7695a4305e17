"""The workspace's in-enclave exec server (`pylos start`), and the entry rules shared with
`pylos run`.

Copied into each build as `/.pylos/server.py` and run by the host's python3 (a trusted file of
the build) as the enclave's first program. It imports only modules built into the interpreter
or copied next to it (posix, _socket, select, marshal, _signal, time): importing the standard
library's `os`/`socket`/`json` would pull dozens of files into the trusted set and into every
start-up. The host side imports the same functions, so `run` and `exec` apply one rule set.

Protocol on the SOCK_SEQPACKET socket `/.pylos/run/exec.sock` (host: `run/server/`): each
message is one marshal'd dict; an `exec` request carries the client's fds 0, 1, 2 (SCM_RIGHTS).
Per connection the server forks a handler, which forks the program (own process group, cwd
`/`, argv[0] = basename, the client's stdio) and answers with its exit status. Programs are
started by the server inside the enclave, so they run under the same seccomp filter and file
policy as everything else in it; a client that disconnects early has its program killed.
"""

import _signal
import _socket
import marshal
import posix
import select
import sys
import time

SOCKET = "/.pylos/run/exec.sock"
MSG_CMSG_CLOEXEC = 0x40000000
STOP_GRACE_SECONDS = 30.0
KILL_GRACE_SECONDS = 2.0


def entry_error(path: str, entry_points: list[str]) -> str | None:
    """Why `path` may not be started (Occlum: absolute, no `..`, under an entry point)."""
    if not path.startswith("/"):
        return f"'{path}' is not an absolute path"
    parts = path.split("/")
    if ".." in parts:
        return f"'{path}' contains a '..' component"
    for entry in entry_points:
        prefix = [p for p in entry.split("/") if p]
        if [p for p in parts if p][:len(prefix)] == prefix:
            return None
    return f"'{path}' is not under an entry point of Occlum.json ({', '.join(entry_points)})"


def program_env(default: dict[str, str], untrusted: list[str],
                host_env: dict[str, str]) -> dict[str, str]:
    """Occlum's environment: env.default, overridden by host variables named in env.untrusted."""
    env = dict(default)
    for name in untrusted:
        if name in host_env:
            env[name] = host_env[name]
    return env


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    if posix.WIFEXITED(status):
        return posix.WEXITSTATUS(status)
    return 128 + posix.WTERMSIG(status)


def _reply(conn: _socket.socket, message: dict) -> None:
    try:  # noqa: SIM105 (contextlib is not built in: see the module docstring)
        conn.send(marshal.dumps(message))
    except OSError:
        pass  # the client is gone; nothing to tell


def _start_program(path: str, argv: list[str], env: dict[str, str], fds: list[int]) -> int:
    pid = posix.fork()
    if pid != 0:
        return pid
    try:
        posix.setpgid(0, 0)
        for target, fd in enumerate(fds[:3]):
            posix.dup2(fd, target, True)
        for sig in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGCHLD, _signal.SIGTERM,
                    _signal.SIGINT):
            _signal.signal(sig, _signal.SIG_DFL)
        posix.chdir("/")
        posix.execve(path, argv, env)
    except OSError as exc:
        posix.write(2, f"pylos exec: cannot start {path}: {exc.strerror}\n".encode())
    posix._exit(127)


def _kill_group(pid: int, sig: int) -> None:
    try:  # noqa: SIM105
        posix.killpg(pid, sig)
    except OSError:
        pass


def _serve_exec(conn: _socket.socket, request: dict, fds: list[int], config: dict) -> None:
    path = request.get("path", "")
    problem = entry_error(path, config["entry_points"]) if isinstance(path, str) else "bad path"
    if problem is not None or len(fds) != 3:
        _reply(conn, {"error": problem or "the request must carry three descriptors",
                      "code": 127})
        return
    env = program_env(config["env_default"], config["env_untrusted"], request.get("env", {}))
    argv = [path.rsplit("/", 1)[-1], *request.get("args", [])]
    pid = _start_program(path, argv, env, fds)
    for fd in fds:
        posix.close(fd)
    pidfd = posix.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(conn.fileno(), select.POLLIN)
    killed_at = None
    while True:
        events = dict(poller.poll(500))
        if pidfd in events:
            break
        if conn.fileno() in events and killed_at is None:
            # The client sent "kill" or went away (Ctrl-C, killed): end the program.
            _kill_group(pid, _signal.SIGTERM)
            killed_at = time.monotonic()
            poller.unregister(conn.fileno())
        if killed_at is not None and time.monotonic() - killed_at > KILL_GRACE_SECONDS:
            _kill_group(pid, _signal.SIGKILL)
    _, status = posix.waitpid(pid, 0)
    _reply(conn, {"status": exit_code(status)})


def _handle(conn: _socket.socket, config: dict, server_pid: int) -> None:
    data, ancdata, _, _ = conn.recvmsg(1 << 20, _socket.CMSG_SPACE(3 * 4), MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds += [int.from_bytes(payload[i:i + 4], sys.byteorder)
                    for i in range(0, usable, 4)]
    try:
        request = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        request = None
    if not isinstance(request, dict):
        _reply(conn, {"error": "malformed request", "code": 2})
        return
    op = request.get("op")
    if op == "ping":
        _reply(conn, {"ok": True})
    elif op == "stop":
        _reply(conn, {"ok": True})
        posix.kill(server_pid, _signal.SIGTERM)
    elif op == "exec":
        _serve_exec(conn, request, fds, config)
    else:
        _reply(conn, {"error": f"unknown operation {op!r}", "code": 2})


def _others() -> list[int]:
    """Every process of the enclave but init (PID 1) and this server."""
    me = posix.getpid()
    return [int(name) for name in posix.listdir("/proc")
            if name.isdigit() and int(name) not in (1, me)]


def _shutdown() -> None:
    """SIGTERM to every program, up to STOP_GRACE_SECONDS for them to exit; the enclave's
    end (init exits after us) kills whatever is left."""
    for pid in _others():
        try:  # noqa: SIM105
            posix.kill(pid, _signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline:
        alive = []
        for pid in _others():
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[-1].split()[0] != b"Z":
                        alive.append(pid)
            except OSError:
                continue
        if not alive:
            return
        time.sleep(0.05)


class _Stop(Exception):
    """Raised by the SIGTERM handler: `accept` would otherwise be retried (PEP 475)."""


def _on_sigterm(_sig: int, _frame: object) -> None:
    raise _Stop


def serve(config_path: str) -> None:
    with open(config_path, "rb") as f:
        config = marshal.load(f)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)  # handlers are reaped by the kernel
    try:  # noqa: SIM105
        posix.unlink(SOCKET)
    except OSError:
        pass
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    listener.bind(SOCKET)
    posix.chmod(SOCKET, 0o600)
    listener.listen(64)
    server_pid = posix.getpid()
    _signal.signal(_signal.SIGTERM, _on_sigterm)
    print("pylos exec server ready (simulated SGX enclave)", flush=True)
    try:
        while True:
            fd, _ = listener._accept()
            if posix.fork() == 0:
                _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
                _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
                listener.close()
                try:
                    _handle(_socket.socket(fileno=fd), config, server_pid)
                finally:
                    posix._exit(0)
            posix.close(fd)
    except _Stop:
        if posix.getpid() != server_pid:
            posix._exit(0)  # a handler hit between its fork and its SIG_DFL
    listener.close()
    try:  # noqa: SIM105
        posix.unlink(SOCKET)
    except OSError:
        pass
    _shutdown()


if __name__ == "__main__":
    serve(sys.argv[1])
