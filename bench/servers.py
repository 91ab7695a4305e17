"""Server workloads for bench/run: the examples' servers natively, under `pylos run`, gVisor
and proot, driven by their real clients (redis-benchmark, wrk, bench/mcload.c).

Each contender runs the same binary with the same arguments: the native command line is the
signed manifest's own `loader.argv`, with in-enclave paths mapped to host paths through its
`fs.mounts` (plus a native copy of a configuration file that names in-enclave paths). One
server runs at a time, on the same port: started, measured, stopped, then the next contender.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


class BenchError(Exception):
    """A server or client misbehaved: the run stops with this message."""


@dataclass
class Example:
    """A built copy of one server example and what it takes to run it outside pylos."""

    name: str
    app: str
    directory: Path
    port: int
    stop_signal: int = signal.SIGTERM
    overrides: dict[str, str] = field(default_factory=dict)  # in-enclave path -> host path
    # Files a server leaves behind that the next contender must not find (redis's snapshot:
    # plain natively, a protected file in the enclave).
    state: tuple[str, ...] = ()

    def manifest(self) -> dict:
        return tomllib.loads((self.directory / f"{self.app}.manifest").read_text())

    def host_path(self, path: str, mounts: list[dict]) -> str:
        if path in self.overrides:
            return self.overrides[path]
        best = None
        for mount in mounts:
            inside = mount["path"].rstrip("/") or "/"
            if (path == inside or path.startswith(inside + "/")) and (
                    best is None or len(inside) > len(best[0])):
                best = (inside, mount)
        if best is None:
            return path
        inside, mount = best
        if mount.get("type", "chroot") == "tmpfs":
            host = self.directory / "native-tmpfs" / inside.lstrip("/")
            host.mkdir(parents=True, exist_ok=True)
            host.chmod(0o777)
            host_root = str(host)
        else:
            uri = mount["uri"].removeprefix("file:")
            host_root = uri if uri.startswith("/") else str(self.directory / uri)
        return host_root + path[len(inside):]

    def native(self) -> tuple[list[str], dict[str, str], int]:
        """The native command line, environment and uid of the enclave's program."""
        manifest = self.manifest()
        loader = manifest["loader"]
        mounts = manifest["fs"]["mounts"]
        entrypoint = self.host_path(manifest["libos"]["entrypoint"], mounts)
        argv = [entrypoint] + [self.host_path(a, mounts) if a.startswith("/") else a
                               for a in loader["argv"][1:]]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
        for key, value in loader.get("env", {}).items():
            if key != "LD_LIBRARY_PATH":  # the host's own libraries, natively
                env[key] = value if isinstance(value, str) else value.get("value", "")
        return argv, env, loader.get("uid", 0)


@dataclass
class Contender:
    name: str
    wrap: Callable[[list[str]], list[str]] | None  # None: pylos run


def sandboxes() -> list[Contender]:
    """gVisor and proot when installed: host network (the client runs outside)."""
    found = []
    if shutil.which("runsc"):
        found.append(Contender("gVisor runsc", lambda argv: [
            "runsc", "--rootless", "--network=host", "do", *argv]))
    if shutil.which("proot"):
        found.append(Contender("proot", lambda argv: ["proot", *argv]))
    return found


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"the server exited with status {process.returncode}:\n"
                             + log.read_text(errors="replace")[-3000:])
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise BenchError(f"nothing listens on port {port} after {timeout} s")


@contextlib.contextmanager
def running(example: Example, contender: Contender, pylos: str
            ) -> Iterator[subprocess.Popen]:
    """One server of `example` under `contender`, stopped (its whole process group) after."""
    log = example.directory / f"OUTPUT.{contender.name.replace(' ', '-')}"
    for name in example.state:
        (example.directory / name).unlink(missing_ok=True)
    if contender.wrap is None:
        argv, env, cwd = [pylos, "run", example.app], None, example.directory
    else:
        command, env, uid = example.native()
        if uid and (os.geteuid() == 0 or contender.name.startswith("gVisor")):
            # As the enclave's program runs (memcached refuses root; nginx as root would
            # switch users): gVisor runs its command as root inside the sandbox.
            command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                       *command]
        argv, cwd = contender.wrap(command), example.directory
    with log.open("w") as out:
        # A server running as the enclave's uid may reopen its output (/dev/stderr).
        log.chmod(0o666)
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(example.port, process, log)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, example.stop_signal)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        _wait_port_free(example.port)


def _wait_port_free(port: int, timeout: float = 20) -> None:
    """Until nothing listens on `port` any more (a sandbox may outlive its launcher briefly)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
        except OSError:
            return
        time.sleep(0.1)
    raise BenchError(f"port {port} still answers {timeout} s after its server was stopped")


def run_client(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                         f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


def redis_client(port: int, requests: int) -> dict[str, float]:
    out = run_client(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-q",
                      "-n", str(requests), "-P", "1", "-t", "set,get", "--csv"])
    rps = dict(re.findall(r'^"(SET|GET)","([\d.]+)"', out, re.M))
    if set(rps) != {"SET", "GET"}:
        raise BenchError(f"redis-benchmark printed no SET and GET rates:\n{out}")
    return {f"redis-benchmark {test} (-n {requests} -P 1)": float(value)
            for test, value in rps.items()}


def wrk_client(title: str, port: int, seconds: int, connections: int = 32
               ) -> dict[str, float]:
    out = run_client(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s",
                      f"http://127.0.0.1:{port}/index.html"])
    if "Non-2xx" in out:
        raise BenchError(f"wrk got error answers:\n{out}")
    match = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if match is None:
        raise BenchError(f"wrk printed no rate:\n{out}")
    return {f"{title} (wrk -t2 -c{connections} -d{seconds}s)": float(match.group(1))}


def memcached_client(mcload: Path, port: int, seconds: float) -> dict[str, float]:
    rates = {}
    for test in ("get", "set"):
        out = run_client([str(mcload), "127.0.0.1", str(port), "32", str(seconds), test])
        rates[f"memcached {test.upper()} (32 connections, {seconds:g} s)"] = float(
            re.search(r"requests/s: ([\d.]+)", out).group(1))
    return rates


def build(name: str, work: Path, pylos: str, key: Path, port: int, *make_args: str) -> Path:
    """A fresh copy of examples/NAME (and common_tools), built and signed."""
    directory = work / f"{name}{'-' + '-'.join(make_args) if make_args else ''}"
    if not (work / "common_tools").exists():
        shutil.copytree(EXAMPLES / "common_tools", work / "common_tools")
    shutil.copytree(EXAMPLES / name, directory, ignore=shutil.ignore_patterns(
        "*.manifest", "*.manifest.sgx", "*.sig", "OUTPUT*", ".settings", "html", "data"))
    # The examples' tools are found as ../common_tools: the copy sits next to it.
    env = {**os.environ, "PATH": f"{Path(pylos).parent}:{os.environ['PATH']}:/usr/sbin"}
    result = subprocess.run(["make", "SGX=1", f"SGX_SIGNER_KEY={key}", f"PORT={port}",
                             *make_args], cwd=directory, env=env, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise BenchError(f"building examples/{name} failed:\n{result.stdout}{result.stderr}")
    directory.chmod(0o755)  # natively the server may run as the enclave's uid
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
