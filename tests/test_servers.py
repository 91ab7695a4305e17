"""Real servers in the enclave: each server example's `make check`, a long run of one server
under 32 concurrent connections (the supervisor's memory must not grow), and the benchmark's
smoke mode. Servers listen on free loopback ports and are stopped even when a test fails."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from support import EXAMPLES, PROJECT_ROOT, PYLOS, free_port, wait_for_port

# name [make arguments]: (client tools `make check` needs, the last success line it prints)
SERVERS = {
    "redis": (("redis-server", "redis-cli", "redis-benchmark"), "[ Success 5/5 ]"),
    "redis ENCRYPTED=0": (("redis-server", "redis-cli", "redis-benchmark"), "[ Success 5/5 ]"),
    "nginx": (("nginx", "curl", "wrk"), "[ Success 4/4 ]"),
    "memcached": (("memcached", "memcslap"), "[ Success 3/3 ]"),
    "lighttpd": (("lighttpd", "curl", "wrk"), "[ Success 4/4 ]"),
    "python-http": (("curl", "wrk"), "[ Success 4/4 ]"),
}
BUILT = shutil.ignore_patterns("*.manifest", "*.manifest.sgx", "*.sig", "OUTPUT*", ".settings",
                               "html", "data", "redis-server", "nginx.conf", "lighttpd.conf")


def require(*tools: str) -> None:
    path = f"{os.environ['PATH']}:/usr/sbin:/sbin"
    missing = [tool for tool in tools if shutil.which(tool, path=path) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: scripts/setup installs the server examples' "
                    "Debian packages when run as root")


def make(example: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`make ARGS` in its own process group, which is killed whatever happens (a check that
    hangs must not leave its server behind)."""
    env = {**os.environ, "PATH": f"{Path(PYLOS).parent}:{os.environ['PATH']}:/usr/sbin"}
    process = subprocess.Popen(["make", *args], cwd=example, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")


@pytest.fixture
def example(tmp_path: Path):
    """A copy of an example's sources (and the tools its check sources), as a clone has them."""
    def copy(name: str) -> Path:
        shutil.copytree(EXAMPLES / "common_tools", tmp_path / "common_tools")
        shutil.copytree(EXAMPLES / name, tmp_path / name, ignore=BUILT)
        return tmp_path / name

    return copy


@pytest.mark.parametrize("name", SERVERS)
def test_server_example_check(name: str, example, key: Path) -> None:
    tools, last = SERVERS[name]
    require("make", *tools)
    directory, *make_args = name.split()
    result = make(example(directory), "SGX=1", f"SGX_SIGNER_KEY={key}", f"PORT={free_port()}",
                  *make_args, "check")
    assert result.returncode == 0, result.stdout
    assert last in result.stdout, result.stdout


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def hammer(port: int, connections: int, requests: int, expected: bytes) -> list[str]:
    """`requests` GETs over `connections` keep-alive connections at once; the errors."""
    errors: list[str] = []
    per_connection = [requests // connections + (i < requests % connections)
                      for i in range(connections)]

    def client(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for _ in range(count):
                conn.request("GET", "/index.html")
                response = conn.getresponse()
                body = response.read()
                if response.status != 200 or body != expected:
                    errors.append(f"status {response.status}, {len(body)} bytes")
        except OSError as exc:
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in per_connection]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_ten_thousand_requests_from_32_connections(example, key, processes,
                                                   record_property) -> None:
    """nginx without open_file_cache: every request opens the page, so every request is a
    trapped open served by the supervisor. No request may fail, and the supervisor's memory
    must not grow between a warm-up and the end of the run."""
    require("make", "nginx")
    nginx = example("nginx")
    port = free_port()
    built = make(nginx, "SGX=1", f"SGX_SIGNER_KEY={key}", f"PORT={port}", "OPEN_FILE_CACHE=0")
    assert built.returncode == 0, built.stdout
    assert not [line for line in (nginx / "nginx.conf").read_text().splitlines()
                if line.strip().startswith("open_file_cache")]
    page = (nginx / "html" / "index.html").read_bytes()
    process = subprocess.Popen([PYLOS, "run", "nginx"], cwd=nginx, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    processes.append(process)
    wait_for_port(port, process)

    assert hammer(port, 32, 1000, page) == []  # warm-up: caches and pools at their size
    before = vm_rss_kib(process.pid)
    errors = hammer(port, 32, 10_000, page)
    after = vm_rss_kib(process.pid)
    record_property("supervisor_rss_kib", f"{before} -> {after}")
    print(f"\nsupervisor VmRSS: {before} KiB before, {after} KiB after 10000 requests")
    assert errors == [], errors[:5]
    # Python's allocator may keep a few pages more; a leak per request would be megabytes.
    assert after - before < 1024, f"supervisor RSS grew from {before} to {after} KiB"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, process.stderr.read()


def test_bench_smoke(tmp_path: Path) -> None:
    """`bench/run --smoke`: every workload once, natively and under pylos; the table and the
    JSON file have a native and a pylos row for each (no timing is asserted)."""
    require("redis-server", "redis-benchmark", "nginx", "wrk", "memcached", "lighttpd", "cc")
    out = tmp_path / "smoke.json"
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "run"), "--smoke",
                             "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    tables = json.loads(out.read_text())["tables"]
    for workload in ("redis-benchmark GET", "redis-benchmark SET",
                     "nginx, 10 KB page, open_file_cache", "nginx, 10 KB page, no open_file",
                     "memcached GET", "memcached SET", "lighttpd", "python http.server",
                     "dd sequential write", "dd sequential read",
                     "helloworld", "import json", "bash loop", "open+close", "getpid"):
        titles = [title for title in tables if workload in title]
        assert len(titles) == 1, f"{workload}: {list(tables)}"
        series = tables[titles[0]]["series"]
        assert "native" in series and any(name.startswith("pylos run") for name in series)
        assert all(len(samples) == 1 and samples[0] > 0 for samples in series.values())
        assert titles[0] in result.stdout  # in the printed table too
