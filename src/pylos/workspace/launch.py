"""Running a built workspace: `pylos run /bin/app` (cold), and server mode (`start`, `exec`,
`stop`, `status`).

`run` verifies the signed manifest like any `pylos run`, then has the runtime start the
requested program instead of the manifest's exec server: the path must lie under one of the
`entry_points` of the *measured* configuration (build/pylos/config.marshal, checked against
its trusted hash), argv[0] is its basename and the environment follows Occlum's rules.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pylos.errors import PylosError
from pylos.workspace.enclave_server import entry_error, program_env

if TYPE_CHECKING:
    from pylos.cli.run_args import RunOptions
    from pylos.runtime.config import EnclaveConfig
    from pylos.runtime.load import LoadedEnclave

ENCLAVE = "build/enclave"
CONFIG_URI = "file:build/pylos/config.marshal"
SOCKET_DIR = "run/server"
SOCKET_NAME = "exec.sock"
SOCKET = f"{SOCKET_DIR}/{SOCKET_NAME}"
PID_FILE = "run/server.pid"
LOG_FILE = "run/server.log"
START_TIMEOUT = 60.0
STOP_GRACE = 30.0
DAEMON_TAG = "pylos-workspace-server"  # in the daemon's command line, for liveness checks


class EntryRefused(PylosError):
    """A path `run`/`exec` may not start: exit status 127, as Occlum's `run` reports it."""

    exit_code = 127


def _require_build(ws: Path) -> None:
    if not (ws / f"{ENCLAVE}.manifest.sgx").exists():
        raise PylosError(f"'{ws}' is not built yet: run `pylos build` first")


def measured_config(loaded: LoadedEnclave, ws: Path) -> dict:
    """The workspace configuration the signed manifest trusts (never Occlum.json itself)."""
    import hashlib

    expected = next((e["sha256"] for e in loaded.manifest.trusted_files
                     if e["uri"] == CONFIG_URI), None)
    path = ws / CONFIG_URI.removeprefix("file:")
    data = path.read_bytes()
    if expected is None or hashlib.sha256(data).hexdigest() != expected:
        raise PylosError(f"'{path}' does not match the signed manifest (modified after "
                         "`pylos build`?)")
    return marshal.loads(data)


def run_in_workspace(path: str, args: list[str], ws: Path | None = None,
                     options: RunOptions | None = None) -> int:
    """`pylos run PATH ARGS` with an Occlum.json in the current directory."""
    from pylos.runtime.launcher import run

    ws = ws or Path.cwd()
    _require_build(ws)

    def configure(loaded: LoadedEnclave, config: EnclaveConfig) -> None:
        image_hook(loaded, config, ws)
        settings = measured_config(loaded, ws)
        problem = entry_error(path, settings["entry_points"])
        if problem is not None:
            raise EntryRefused(f"cannot run {problem}")
        config.entrypoint = path
        config.argv = [path.rsplit("/", 1)[-1], *args]
        config.env = program_env(settings["env_default"], settings["env_untrusted"],
                                 dict(os.environ))
        config.start_dir = "/"

    return run(str(ws / ENCLAVE), [], configure, options)


def image_hook(loaded: LoadedEnclave, config: EnclaveConfig, ws: Path) -> None:
    """An encrypted image (`build --image-key`): unseal its key (sealed to this MRENCLAVE at
    build) and have the runtime decrypt the image's trusted files as it verifies them."""
    from pylos.workspace.image import IMAGE_DIR, decryptor, unseal_image_key

    if loaded.manifest.data["fs"]["root"].get("uri") != f"file:{IMAGE_DIR}":
        return
    from pylos.runtime.keys import KeyStore

    sealing_key = KeyStore(loaded.report_body).get("_sgx_mrenclave")
    if sealing_key is None:
        raise PylosError("an encrypted image runs only from the signed build (no sealing key)")
    config.decrypt_trusted = decryptor(ws, unseal_image_key(ws, sealing_key))


# ---- server mode ---------------------------------------------------------------------------
def _request(ws: Path, message: dict, fds: list[int] | None = None,
             timeout: float | None = 10.0) -> tuple[socket.socket, dict | None]:
    """Send one request; returns the connection and the reply (None if `timeout` is None:
    the caller waits for it)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # Through a directory fd: a socket path is limited to 107 bytes, workspace paths are not.
    directory = os.open(ws / SOCKET_DIR, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        conn.connect(f"/proc/self/fd/{directory}/{SOCKET_NAME}")
        socket.send_fds(conn, [marshal.dumps(message)], fds or [])
        if timeout is None:
            return conn, None
        conn.settimeout(timeout)
        return conn, _read_reply(conn)
    except BaseException:
        conn.close()
        raise
    finally:
        os.close(directory)


def _read_reply(conn: socket.socket) -> dict:
    data = conn.recv(1 << 16)
    if not data:
        raise PylosError("the exec server closed the connection (stopped?)")
    return marshal.loads(data)


def server_pid(ws: Path) -> int | None:
    """PID of this workspace's running server (the enclave's supervisor), if any."""
    try:
        pid = int((ws / PID_FILE).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if DAEMON_TAG.encode() in cmdline else None


def ping(ws: Path) -> bool:
    try:
        conn, reply = _request(ws, {"op": "ping"}, timeout=5.0)
        conn.close()
        return bool(reply and reply.get("ok"))
    except (OSError, PylosError, EOFError, ValueError):
        return False


def start_server(ws: Path) -> int:
    """`pylos start`: boot the enclave once with its exec server; returns the server's PID."""
    import subprocess

    _require_build(ws)
    if server_pid(ws) is not None:
        raise PylosError(f"the workspace's server is already running (pid {server_pid(ws)}); "
                         "`pylos stop` it first")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ws / SOCKET)
    # The daemon must be this very pylos in this very interpreter setup: its LibOS hash is in
    # the signed manifest, and sys.prefix (which `-I -S` changes) locates the simulated
    # platform whose sealing keys the writable layer uses.
    flags = [flag for flag, on in (("-I", sys.flags.isolated), ("-S", sys.flags.no_site)) if on]
    code = (f"import sys; sys.path[:0] = {sys.path!r}; "
            "from pylos.workspace.launch import _serve; sys.exit(_serve(sys.argv[1]))")
    log = open(ws / LOG_FILE, "ab")  # noqa: SIM115 (handed to the daemon)
    try:
        process = subprocess.Popen(
            [sys.executable, *flags, "-c", code, str(ws), DAEMON_TAG], cwd=ws,
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    finally:
        log.close()
    from pylos.hashing import write_atomic

    write_atomic(ws / PID_FILE, f"{process.pid}\n".encode())
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (ws / LOG_FILE).read_text(errors="replace").strip().splitlines()[-5:]
            raise PylosError("the enclave's exec server did not start:\n  " + "\n  ".join(tail))
        if (ws / SOCKET).exists() and ping(ws):
            return process.pid
        time.sleep(0.02)
    process.kill()
    raise PylosError(f"the exec server did not answer within {START_TIMEOUT:.0f} s (see "
                     f"{ws / LOG_FILE})")


def exec_in_server(ws: Path, path: str, args: list[str]) -> int:
    """`pylos exec`: run PATH in the started enclave on our stdio; returns its exit status."""
    if server_pid(ws) is None or not (ws / SOCKET).exists():
        raise PylosError("the workspace's server is not running: `pylos start` it first")
    message = {"op": "exec", "path": path, "args": args, "env": dict(os.environ)}
    try:
        conn, _ = _request(ws, message, [0, 1, 2], timeout=None)
    except OSError as exc:
        raise PylosError(f"cannot reach the exec server ({ws / SOCKET}): {exc.strerror}"
                         ) from None
    interrupted: list[int] = []

    def stop_program(sig: int, _frame: object) -> None:
        # Half-closing the connection tells the server to end the program (SIGTERM, then
        # SIGKILL); its status still comes back.
        interrupted.append(sig)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)

    previous = {sig: signal.signal(sig, stop_program)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP)}
    try:
        reply = _read_reply(conn)
    finally:
        conn.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in reply:
        raise EntryRefused(f"cannot exec {reply['error']}") if reply.get("code") == 127 else (
            PylosError(reply["error"]))
    return int(reply["status"])


def stop_server(ws: Path, grace: float = STOP_GRACE) -> bool:
    """`pylos stop`: ask the server to end its programs (SIGTERM), wait, then kill. Returns
    False when no server was running."""
    pid = server_pid(ws)
    if pid is None:
        return False
    with contextlib.suppress(OSError, PylosError, EOFError, ValueError):
        conn, _ = _request(ws, {"op": "stop"}, timeout=5.0)
        conn.close()
    deadline = time.monotonic() + grace + 2.0
    while time.monotonic() < deadline and server_pid(ws) is not None:
        time.sleep(0.02)
    if server_pid(ws) is not None:
        # The supervisor's death ends the whole enclave (parent-death signals down the chain).
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while server_pid(ws) is not None:
            time.sleep(0.02)
    for name in (PID_FILE, SOCKET):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ws / name)
    return True


def _serve(ws: str) -> int:
    """The daemon `pylos start` spawns: the enclave's supervisor running the exec server."""
    from pylos.runtime.launcher import run

    os.chdir(ws)
    try:
        return run(ENCLAVE, [], lambda loaded, config: image_hook(loaded, config, Path.cwd()))
    except PylosError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCKET)
