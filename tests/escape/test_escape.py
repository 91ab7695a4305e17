"""The escape suite: every attempt in attempts.c runs in a real enclave, in namespace mode and
in identity mode (no Linux namespaces: enclave paths are host paths), and must be held.

Held means: the program saw the way out refused (it prints HELD), nothing it read was the
host secret or the sentinel, nothing on the host changed (every file and directory outside
the allowed directory is snapshotted before and after: bytes, mode, owner, links, times), no
set-id file or device node appeared anywhere, no host socket was reached, the host process
it signalled lives, the terminal got no input, and the supervisor still served a trusted file
after the attempt (SERVED) without an internal error.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import pty
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import tomllib
import tty
from dataclasses import dataclass
from pathlib import Path

import pytest

from pylos.runtime import landlock
from pylos.runtime.doctor import FOR_TESTS, missing_features

from support import PYLOS, run_pylos

SOURCE = Path(__file__).with_name("attempts.c")
ATTEMPTS = re.findall(r'ATTEMPT\("([a-z0-9-]+)"', SOURCE.read_text())
MARKERS = ("TOPSECRET", "SENTINEL")
NO_NAMESPACES = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'
# Puts the host descriptors at 9, 10, 11 without O_CLOEXEC, as `exec 9</dir` in a shell would.
INHERIT = ("import os, sys\n"
           "for number, fd in zip((9, 10, 11), sys.argv[1:4]):\n"
           "    os.dup2(int(fd), number, inheritable=True)\n"
           "    os.close(int(fd))\n"
           "os.execvp(sys.argv[4], sys.argv[4:])\n")
HOST_SETTINGS = tuple(Path(p) for p in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe",
                                        "/proc/sys/kernel/sysrq", "/sys/kernel/uevent_helper"))
TERMINAL_ATTEMPTS = {"tiocsti", "tioclinux"}
SUID_BINARY = next((p for p in ("/usr/bin/su", "/usr/bin/passwd", "/usr/bin/mount")
                    if os.path.exists(p) and os.stat(p).st_mode & stat.S_ISUID), "/usr/bin/su")

NAMESPACE_TEMPLATE = """\
libos.entrypoint = "/app"
loader.log_level = "error"
loader.insecure__use_cmdline_argv = true
loader.env.LD_LIBRARY_PATH = "/lib"
{env}
fs.mounts = [
  {{ path = "/lib", uri = "file:{{{{ gramine.runtimedir() }}}}" }},
  {{ path = "/app", uri = "file:attempts" }},
  {{ type = "tmpfs", path = "/tmp" }},
]
sgx.max_threads = 16
sgx.trusted_files = [
  "file:attempts",
  "file:trusted.txt",
  "file:{{{{ gramine.runtimedir() }}}}/",
]
sgx.allowed_files = [ "file:data/" ]
"""

IDENTITY_TEMPLATE = """\
libos.entrypoint = "{root}/attempts"
loader.log_level = "error"
loader.insecure__use_cmdline_argv = true
loader.env.LD_LIBRARY_PATH = "{{{{ gramine.runtimedir() }}}}"
{env}
fs.root.uri = "file:/"
fs.start_dir = "{root}"
fs.mounts = []
sgx.max_threads = 16
sgx.trusted_files = [
  "file:{root}/attempts",
  "file:{root}/trusted.txt",
  "file:/lib64/ld-linux-x86-64.so.2",
  "file:{{{{ gramine.runtimedir() }}}}/",
]
sgx.allowed_files = [ "file:{root}/data/" ]
"""


@dataclass
class Host:
    """What lives outside the enclave: the secret and the sentinel, a process, sockets."""

    base: Path
    hostdir: Path
    sleeper: subprocess.Popen
    abstract_name: str
    stream: socket.socket
    datagram: socket.socket
    connections: list

    @property
    def secret(self) -> Path:
        return self.hostdir / "secret.txt"


@dataclass
class Enclave:
    mode: str
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"


def _serve_descriptors(host: Host, directory: int) -> None:
    """The host service: whoever connects gets the host directory's descriptor."""
    while True:
        try:
            conn, _ = host.stream.accept()
        except OSError:
            return
        host.connections.append(conn)
        with contextlib.suppress(OSError):
            socket.send_fds(conn, [b"x"], [directory])


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory):
    missing = missing_features(FOR_TESTS)
    if missing:
        pytest.fail("this kernel cannot run pylos enclaves: " + "; ".join(missing))
    base = tmp_path_factory.mktemp("escape")
    hostdir = base / "host"
    (hostdir / "sentinel" / "subdir").mkdir(parents=True)
    (hostdir / "secret.txt").write_text("TOPSECRET-escape-host\n")
    (hostdir / "sentinel" / "victim.txt").write_text("SENTINEL-victim\n")
    (hostdir / "sentinel" / "subdir" / "deep.txt").write_text("SENTINEL-deep\n")
    os.symlink("victim.txt", hostdir / "sentinel" / "link")
    sleeper = subprocess.Popen(["sleep", "3600"])
    name = f"pylos-escape-{os.getpid()}"
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.bind("\0" + name)
    stream.listen(8)
    datagram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    datagram.bind("\0" + name + "-dgram")
    datagram.setblocking(False)
    directory = os.open(hostdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    made = Host(base, hostdir, sleeper, name, stream, datagram, [])
    server = threading.Thread(target=_serve_descriptors, args=(made, directory), daemon=True)
    server.start()
    yield made
    stream.shutdown(socket.SHUT_RDWR)
    stream.close()
    datagram.close()
    server.join(5)
    os.close(directory)
    sleeper.kill()
    sleeper.wait()


@pytest.fixture(scope="module")
def attempts(host: Host) -> Path:
    out = host.base / "attempts"
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", str(out),
                    str(SOURCE)], check=True)
    return out


def _environment(values: dict[str, str]) -> str:
    return "".join(f'loader.env.{key} = "{value}"\n' for key, value in values.items())


@pytest.fixture(scope="module", params=["namespace", "identity"])
def enclave(request: pytest.FixtureRequest, host: Host, attempts: Path) -> Enclave:
    mode = request.param
    if mode == "identity" and shutil.which("unshare") is None:
        pytest.skip("identity mode is made with util-linux's unshare")
    root = host.base / mode
    (root / "data").mkdir(parents=True)
    shutil.copy(attempts, root / "attempts")
    (root / "trusted.txt").write_text("trusted content\n")
    (root / "plain.txt").write_text("plain content\n")
    if mode == "namespace":
        env = _environment({
            "ESC_SECRET": host.secret, "ESC_HOSTDIR": host.hostdir, "ESC_DATA": "/data",
            "ESC_TRUSTED": "/trusted.txt", "ESC_PLAIN": "/plain.txt", "ESC_APP": "/app",
            "ESC_TMP": "/tmp", "ESC_SUID": SUID_BINARY})
        template = NAMESPACE_TEMPLATE.format(env=env)
    else:
        env = _environment({
            "ESC_SECRET": host.secret, "ESC_HOSTDIR": host.hostdir, "ESC_DATA": root / "data",
            "ESC_TRUSTED": root / "trusted.txt", "ESC_PLAIN": root / "plain.txt",
            "ESC_APP": root / "attempts", "ESC_TMP": "/dev/shm", "ESC_SUID": SUID_BINARY})
        template = IDENTITY_TEMPLATE.format(root=root, env=env)
    (root / "app.manifest.template").write_text(template)
    result = run_pylos("manifest", "app.manifest.template", "app.manifest", cwd=root)
    assert result.returncode == 0, result.stderr
    return Enclave(mode, root)


def snapshot(base: Path, skip: Path) -> dict[str, tuple]:
    """Everything the host keeps under `base`, except inside `skip` (the allowed directory,
    where the program may write) and the compiled program's build copy."""
    state: dict[str, tuple] = {}
    for directory, dirs, files in os.walk(base):
        if Path(directory) == skip:
            dirs.clear()
            files = []
        for name in dirs + files:
            path = Path(directory) / name
            st = path.lstat()
            content: object = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            if path == skip:  # its entries change: only what it is
                state[str(path.relative_to(base))] = (st.st_mode, st.st_uid, st.st_gid)
                continue
            state[str(path.relative_to(base))] = (st.st_mode, st.st_uid, st.st_gid, st.st_nlink,
                                                  st.st_size, st.st_mtime_ns, content)
    for setting in HOST_SETTINGS:
        if setting.exists():
            state[str(setting)] = (setting.read_text(),)
    st = os.stat("/dev/null")  # every run's standard input or a stream's peer
    state["/dev/null"] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
    return state


def planted(base: Path) -> list[str]:
    """Set-id files, set-gid directories and device nodes anywhere under `base`."""
    found = []
    for directory, dirs, files in os.walk(base):
        for name in dirs + files:
            path = Path(directory) / name
            st = path.lstat()
            mode = st.st_mode
            if (mode & stat.S_ISUID or (mode & stat.S_ISGID and not stat.S_ISDIR(mode))
                    or (stat.S_ISDIR(mode) and mode & stat.S_ISGID)
                    or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
                found.append(f"{path} mode {mode:o}")
    return found


def _restore_host_settings(before: dict[str, tuple]) -> None:
    """Should an attempt ever get through to a host sysctl, put it back (the test fails on the
    snapshot anyway): the machine running the suite must not keep a hostile core_pattern."""
    for setting in HOST_SETTINGS:
        saved = before.get(str(setting))
        with contextlib.suppress(OSError):
            if saved is not None and setting.read_text() != saved[0]:
                setting.write_text(saved[0])


def poison(enclave: Enclave, cache: Path) -> None:
    """The host tampers with a trusted file and rewrites the parse cache so that the manifest
    vouches for the tampered bytes (a forged MAC, and a MAC that is a plain hash)."""
    trusted = enclave.root / "trusted.txt"
    tampered = b"TAMPERED by the host\n"
    manifest_bytes = (enclave.root / "app.manifest").read_bytes()
    data = tomllib.loads(manifest_bytes.decode())
    for entry in data["sgx"]["trusted_files"]:
        if entry["uri"].endswith("trusted.txt"):
            entry["sha256"] = hashlib.sha256(tampered).hexdigest()
    body = marshal.dumps(data)
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    (cache / "manifests").mkdir(parents=True, exist_ok=True)
    (cache / "manifests" / f"{digest}.marshal").write_bytes(hashlib.sha256(body).digest() + body)
    trusted.write_bytes(tampered)


def launch(enclave: Enclave, host: Host, name: str, stdin: int | None, peer: socket.socket
           ) -> subprocess.CompletedProcess:
    argv = [PYLOS, "run", "--log-level", "warning", "app", name, str(host.sleeper.pid),
            host.abstract_name]
    if enclave.mode == "identity":
        argv = ["unshare", "-Ur", "sh", "-c", NO_NAMESPACES, "sh", *argv]
    directory = os.open(host.hostdir, os.O_RDONLY | os.O_DIRECTORY)
    handle = os.open(host.secret, os.O_PATH)
    try:
        passed = (directory, handle, peer.fileno())
        return subprocess.run(
            [sys.executable, "-S", "-c", INHERIT, *map(str, passed), *argv], cwd=enclave.root,
            pass_fds=passed, stdin=stdin if stdin is not None else subprocess.DEVNULL,
            capture_output=True, text=True, timeout=240)
    finally:
        os.close(directory)
        os.close(handle)


@pytest.mark.parametrize("name", ATTEMPTS)
def test_attempt_is_held(name: str, enclave: Enclave, host: Host, isolated_cache: Path) -> None:
    if name.startswith("abstract") and landlock.abi() < 6:
        pytest.skip("abstract UNIX socket scoping needs Landlock ABI 6")
    original = (enclave.root / "trusted.txt").read_bytes()
    if name == "tampered-trusted-file":
        poison(enclave, isolated_cache)
    before = snapshot(host.base, enclave.data)
    connections = len(host.connections)
    mine, theirs = socket.socketpair()
    terminal = pty.openpty() if name in TERMINAL_ATTEMPTS else None
    if terminal:
        tty.setraw(terminal[1])
    stdin = terminal[1] if terminal else None
    if name == "inherited-stdio-metadata":  # a host file as standard input, in the snapshot
        stdin = os.open(host.hostdir / "sentinel" / "victim.txt", os.O_RDONLY)
    try:
        result = launch(enclave, host, name, stdin, theirs)
        theirs.close()
        output = result.stdout + result.stderr
        assert result.returncode == 0 and f"HELD {name}:" in result.stdout, output
        assert "SERVED" in result.stdout, f"the supervisor stopped serving:\n{output}"
        for marker in MARKERS:
            assert marker not in output, output
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr, output
        assert snapshot(host.base, enclave.data) == before, output
        assert planted(host.base) == [], output
        assert len(host.connections) == connections, "a host abstract socket was reached"
        with pytest.raises(BlockingIOError):
            host.datagram.recv(64)
        mine.settimeout(5)
        assert mine.recv(64) == b"", "the inherited socket carried data"  # EOF, nothing sent
        assert host.sleeper.poll() is None, "the host process was killed"
        if terminal:
            os.set_blocking(terminal[1], False)
            with pytest.raises(BlockingIOError):
                os.read(terminal[1], 64)  # nothing typed into the terminal
    finally:
        _restore_host_settings(before)
        if name == "inherited-stdio-metadata" and stdin is not None:
            os.close(stdin)
        mine.close()
        if terminal:
            os.close(terminal[0])
            os.close(terminal[1])
        (enclave.root / "trusted.txt").write_bytes(original)


def test_enclave_processes_still_use_abstract_sockets(enclave: Enclave, host: Host) -> None:
    mine, theirs = socket.socketpair()
    with mine, theirs:
        result = launch(enclave, host, "--abstract-inside", None, theirs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "abstract inside: child 0, read 5 'hello'" in result.stdout


def test_memfds_are_memory_not_code(enclave: Enclave, host: Host) -> None:
    mine, theirs = socket.socketpair()
    with mine, theirs:
        result = launch(enclave, host, "--memfd-works", None, theirs)
    assert result.returncode == 0, result.stdout + result.stderr
    # chmod +x of an exec-sealed memfd: the kernel's error (EPERM or EINVAL), never allowed
    assert re.fullmatch(r"memfd: fd ok, rw ok, mmap ok, seal-exec yes, chmod\+x E[A-Z]+, "
                        r"MFD_EXEC EACCES, bad flags EINVAL, cloexec yes\n", result.stdout), \
        result.stdout
    assert "Disallowing memfd_create(MFD_EXEC)" in result.stderr


def test_the_suite_is_large_enough() -> None:
    assert len(ATTEMPTS) >= 60 and len(set(ATTEMPTS)) == len(ATTEMPTS)
