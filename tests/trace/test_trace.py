"""`pylos trace -- CMD`: real programs traced natively, and the templates it writes rendered,
signed and run in the enclave with the output the program gave natively.

Programs: a C helloworld compiled here, Debian's python3 importing json, sqlite3 and numpy,
bash running coreutils, redis-server and nginx on free loopback ports (servers and traces are
stopped, by process group, even when a test fails)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import PYLOS, free_port, wait_for_port

PYTHON = "/usr/bin/python3"  # Debian's, with python3-numpy (scripts/setup --tests)
HELLO_C = '#include <stdio.h>\nint main(void) { puts("Hello, world"); return 0; }\n'


def require(*tools: str) -> None:
    path = f"{os.environ['PATH']}:/usr/sbin:/sbin"
    missing = [tool for tool in tools if shutil.which(tool, path=path) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: scripts/setup --tests installs them when "
                    "run as root")


def pylos(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PYLOS, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def trace(cwd: Path, *command: str, options: tuple[str, ...] = ()) -> tuple[
        subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = pylos("trace", *options, "--", *command, cwd=cwd)
    return result, time.monotonic() - started


def build(cwd: Path, name: str, key: Path) -> None:
    """`pylos manifest` then `pylos sign`, as a user builds a template."""
    rendered = pylos("manifest", f"{name}.manifest.template", f"{name}.manifest", cwd=cwd)
    assert rendered.returncode == 0, rendered.stderr
    signed = pylos("sign", "-k", str(key), "-m", f"{name}.manifest", cwd=cwd)
    assert signed.returncode == 0, signed.stderr
    assert (cwd / f"{name}.sig").stat().st_size == 1808


@pytest.fixture
def app(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    return directory


@pytest.fixture
def hello(app: Path) -> Path:
    require("gcc")
    (app / "hello.c").write_text(HELLO_C)
    subprocess.run(["gcc", "-O2", "-o", "hello", "hello.c"], cwd=app, check=True)
    return app


def test_helloworld_template_renders_signs_runs(hello: Path, key: Path,
                                                record_property) -> None:
    result, elapsed = trace(hello, "./hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, world\n"
    record_property("trace_seconds", f"{elapsed:.2f}")
    template = (hello / "hello.manifest.template").read_text()
    assert f'libos.entrypoint = "{hello}/hello"' in template
    assert 'loader.argv = ["./hello"]' in template
    assert f'fs.start_dir = "{hello}"' in template
    assert f'"file:{hello}/hello",' in template
    assert '"file:/usr/lib/x86_64-linux-gnu/libc.so.6",' in template
    assert 'sgx.max_threads = 3' in template  # one thread seen
    assert 'sgx.enclave_size = "64M"' in template
    build(hello, "hello", key)
    ran = pylos("run", "hello", cwd=hello)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "Hello, world\n"


def test_helloworld_trace_is_byte_identical_across_runs(hello: Path, tmp_path: Path) -> None:
    first, _ = trace(hello, "./hello")
    assert first.returncode == 0, first.stderr
    saved = tmp_path / "first.template"
    shutil.copy(hello / "hello.manifest.template", saved)
    second, _ = trace(hello, "./hello")  # its template from the first run is there now
    assert second.returncode == 0, second.stderr
    assert (hello / "hello.manifest.template").read_bytes() == saved.read_bytes()


PYTHON_SCRIPT = """\
import json, sqlite3, numpy
db = sqlite3.connect(":memory:")
db.execute("create table t (x)")
db.executemany("insert into t values (?)", [(i,) for i in range(10)])
total = db.execute("select sum(x) from t").fetchone()[0]
matrix = numpy.arange(9.0).reshape(3, 3)
print(json.dumps({"sum": total, "trace": float(numpy.trace(matrix)),
                  "det": round(float(numpy.linalg.det(matrix + numpy.eye(3))), 6)}))
"""


def require_python(*modules: str) -> None:
    """Debian's python3, importing `modules` (python3-numpy: scripts/setup --tests)."""
    imports = "; ".join(f"import {module}" for module in modules) or "pass"
    if not os.path.exists(PYTHON) or subprocess.run([PYTHON, "-c", imports],
                                                    capture_output=True).returncode:
        pytest.fail(f"Debian's {PYTHON} importing {', '.join(modules) or 'nothing'} is needed: "
                    "scripts/setup --tests installs python3-numpy when run as root")


def test_python_json_sqlite3_numpy(app: Path, key: Path, record_property) -> None:
    require_python("numpy")
    (app / "script.py").write_text(PYTHON_SCRIPT)
    native = subprocess.run([PYTHON, "script.py"], cwd=app, capture_output=True, text=True)
    assert native.returncode == 0, native.stderr
    result, elapsed = trace(app, PYTHON, "script.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout == native.stdout
    record_property("trace_seconds", f"{elapsed:.2f}")
    template = (app / "python3.manifest.template").read_text()
    # Whole package directories where the run used most of them; the rest file by file.
    assert '"file:/usr/lib/python3.11/json/",' in template
    assert "/usr/lib/python3/dist-packages/numpy/core/_multiarray_umath" in template
    assert f'"file:{app}/script.py",' in template
    build(app, "python3", key)
    ran = pylos("run", "python3", cwd=app)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == native.stdout


BASH_SCRIPT = (
    "ls *.txt | sort; echo hello > out.txt; cat out.txt | wc -c; date -u -d @0 +%Y; "
    "mkdir -p work/sub; cp out.txt work/sub/; head -c 3 work/sub/out.txt; echo; rm -r work; "
    "tr a-z A-Z < out.txt; seq 3 | tac; awk '{ print NF }' out.txt; sha256sum out.txt"
)


def test_bash_running_coreutils(app: Path, key: Path, record_property) -> None:
    (app / "input.txt").write_text("some input\n")
    result, elapsed = trace(app, "bash", "-c", BASH_SCRIPT)
    assert result.returncode == 0, result.stderr
    record_property("trace_seconds", f"{elapsed:.2f}")
    assert result.stdout.startswith("input.txt\n6\n1970\nhel\nHELLO\n3\n2\n1\n1\n")
    template = (app / "bash.manifest.template").read_text()
    for tool in ("bash", "ls", "sort", "cat", "wc", "date", "cp", "tac", "sha256sum"):
        assert f'"file:/usr/bin/{tool}",' in template
    assert '{ type = "tmpfs", path = "/tmp" },' in template  # tac's temporary file
    assert f'"file:{app}/",' in template  # out.txt and work/ made there
    (app / "out.txt").unlink()
    build(app, "bash", key)
    ran = pylos("run", "bash", cwd=app)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == result.stdout


def start(processes: list, cwd: Path, *args: str) -> subprocess.Popen:
    process = subprocess.Popen([PYLOS, *args], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    processes.append(process)
    return process


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    return process.returncode, stderr


def redis(port: int, *command: str) -> bytes:
    """One RESP command, the raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"*{len(command)}\r\n".encode() + b"".join(
            f"${len(part)}\r\n{part}\r\n".encode() for part in command))
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def test_redis_server(app: Path, key: Path, processes: list, record_property) -> None:
    """Traced with persistence (BGSAVE forks); the enclave run finds the traced run's data."""
    require("redis-server")
    port = free_port()
    (app / "data").mkdir()
    started = time.monotonic()
    traced = start(processes, app, "trace", "--", "redis-server", "--port", str(port), "--bind",
                   "127.0.0.1", "--save", "", "--dir", "data")
    wait_for_port(port, traced)
    assert redis(port, "SET", "greeting", "hello") == b"+OK\r\n"
    assert redis(port, "BGSAVE") == b"+Background saving started\r\n"
    deadline = time.monotonic() + 30
    while not (app / "data" / "dump.rdb").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    status, stderr = stop(traced)
    record_property("trace_seconds", f"{time.monotonic() - started:.2f}")
    assert status == 0, stderr
    template = (app / "redis-server.manifest.template").read_text()
    assert f"#   listen tcp 127.0.0.1:{port}" in template
    assert f'"file:{app}/data/",' in template
    build(app, "redis-server", key)
    server = start(processes, app, "run", "redis-server")
    wait_for_port(port, server)
    assert redis(port, "GET", "greeting") == b"$5\r\nhello\r\n"  # loaded from dump.rdb
    assert redis(port, "SET", "second", "run") == b"+OK\r\n"
    assert redis(port, "BGSAVE") == b"+Background saving started\r\n"
    status, stderr = stop(server)
    assert status == 0, stderr


NGINX_CONF = """\
daemon off;
worker_processes 1;
pid nginx.pid;
error_log stderr;
events {{ worker_connections 64; }}
http {{
    access_log access.log;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ root html; }}
    }}
}}
"""


def http_get(port: int, path: str) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def world_readable_app() -> Iterator[Path]:
    """An application directory nginx's workers can read natively: as root, nginx runs them
    as nobody, and pytest's temporary directories are private to their owner."""
    with tempfile.TemporaryDirectory(prefix="pylos-trace-") as directory:
        os.chmod(directory, 0o755)
        yield Path(directory)


def test_nginx(world_readable_app: Path, key: Path, processes: list, record_property) -> None:
    require("nginx")
    app = world_readable_app
    port = free_port()
    (app / "nginx.conf").write_text(NGINX_CONF.format(port=port))
    (app / "html").mkdir()
    (app / "tmp").mkdir()
    page = b"<p>served from the enclave</p>\n" * 100
    (app / "html" / "index.html").write_bytes(page)
    started = time.monotonic()
    traced = start(processes, app, "trace", "--", "nginx", "-p", f"{app}/", "-c", "nginx.conf",
                   "-e", "stderr")
    wait_for_port(port, traced)
    assert http_get(port, "/index.html") == (200, page)
    status, stderr = stop(traced)
    record_property("trace_seconds", f"{time.monotonic() - started:.2f}")
    assert status == 0, stderr
    template = (app / "nginx.manifest.template").read_text()
    assert f'"file:{app}/html/index.html",' in template
    assert f'"file:{app}/nginx.conf",' in template
    if os.getuid() == 0:  # nginx as root switches its workers to nobody: the enclave has one
        assert "loader.uid = 65534" in template
    build(app, "nginx", key)
    server = start(processes, app, "run", "nginx")
    wait_for_port(port, server)
    assert http_get(port, "/index.html") == (200, page)
    assert http_get(port, "/missing")[0] == 404
    status, stderr = stop(server)
    assert status == 0, stderr


def test_append_merges_runs(app: Path, key: Path) -> None:
    """Two scripts traced into one template: arguments from the command line, and the files
    of both runs, so each script runs in the enclave."""
    require_python()
    (app / "one.py").write_text("import json\nprint(json.dumps([1, 2]))\n")
    (app / "two.py").write_text("import sqlite3\nprint(sqlite3.connect(':memory:')"
                                ".execute('select 40 + 2').fetchone()[0])\n")
    first, _ = trace(app, PYTHON, "one.py", options=("-o", "py.manifest.template"))
    assert first.returncode == 0, first.stderr
    alone = (app / "py.manifest.template").read_text()
    assert "\nloader.argv = " in alone and "_sqlite3" not in alone
    second, _ = trace(app, PYTHON, "two.py", options=("-o", "py.manifest.template",
                                                       "--append"))
    assert second.returncode == 0, second.stderr
    assert "from 2 runs" in second.stderr
    merged = (app / "py.manifest.template").read_text()
    assert "loader.insecure__use_cmdline_argv = true" in merged
    assert "\nloader.argv = " not in merged
    assert '"file:/usr/lib/python3.11/json/",' in merged
    assert "_sqlite3.cpython" in merged
    build(app, "py", key)
    for script, expected in (("one.py", "[1, 2]\n"), ("two.py", "42\n")):
        ran = pylos("run", "py", script, cwd=app)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == expected


def assert_clean_error(result: subprocess.CompletedProcess, status: int, *words: str) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_bad_input(hello: Path) -> None:
    assert_clean_error(pylos("trace", cwd=hello), 2, "no command given")
    assert_clean_error(pylos("trace", "--", cwd=hello), 2, "no command given")
    assert_clean_error(pylos("trace", "--", "no-such-command-here", cwd=hello), 2,
                       "command not found: 'no-such-command-here'")
    assert_clean_error(pylos("trace", "--", "./hello.c", cwd=hello), 2, "cannot execute")
    # Checked before the program runs: it must not run for nothing.
    result = pylos("trace", "-o", "/proc/hello.manifest.template", "--", "./hello", cwd=hello)
    assert_clean_error(result, 2, "cannot write the template '/proc/hello.manifest.template'")
    assert result.stdout == ""
    result = pylos("trace", "-o", "missing/x.template", "--", "./hello", cwd=hello)
    assert_clean_error(result, 2, "directory 'missing' does not exist")
    assert_clean_error(pylos("trace", "--append", "-o", "nope.template", "--", "./hello",
                             cwd=hello), 2, "'nope.template' does not exist")
    original = (hello / "hello.c").read_bytes()
    result = pylos("trace", "--append", "-o", "hello.c", "--", "./hello", cwd=hello)
    assert_clean_error(result, 1, "hello.c: not a template written by `pylos trace`")
    assert result.stdout == ""
    assert (hello / "hello.c").read_bytes() == original
    # A template of another program: refused before running, and left as it was.
    assert trace(hello, "./hello")[0].returncode == 0
    template = (hello / "hello.manifest.template").read_bytes()
    result = pylos("trace", "--append", "-o", "hello.manifest.template", "--", "true",
                   cwd=hello)
    assert_clean_error(result, 2, "is a template for", "trace it into a template of its own")
    assert (hello / "hello.manifest.template").read_bytes() == template
    # A damaged data block.
    damaged = hello / "damaged.template"
    damaged.write_text(template.decode().replace('"runs": [', '"runs": [[', 1))
    assert_clean_error(pylos("trace", "--append", "-o", str(damaged), "--", "./hello",
                             cwd=hello), 1, "block is damaged")


def test_exit_status_is_the_programs(app: Path) -> None:
    result, _ = trace(app, "bash", "-c", "echo partial; exit 3")
    assert result.returncode == 3
    assert result.stdout == "partial\n"
    assert "exited with status 3" in result.stderr
    assert "exit status 3" in (app / "bash.manifest.template").read_text()


DEEP_C = """\
#include <stdio.h>
#include <string.h>
static int depth(int n) {
    volatile char frame[1024];
    memset((char *)frame, n & 0x7f, sizeof frame);
    return n == 0 ? frame[0] : depth(n - 1) + frame[1];
}
int main(void) { printf("%d\\n", depth(1000)); return 0; }
"""


def test_stack_growth_sets_sys_stack_size(app: Path) -> None:
    """A main stack of ~1 MiB (native limit 8 MiB) needs more than the 256K default: the
    template sets sys.stack.size, and without that line the enclave run dies."""
    require("gcc")
    (app / "deep.c").write_text(DEEP_C)
    subprocess.run(["gcc", "-O0", "-o", "deep", "deep.c"], cwd=app, check=True)
    result, _ = trace(app, "./deep")
    assert result.returncode == 0, result.stderr
    template = (app / "deep.manifest.template").read_text()
    assert 'sys.stack.size = "4M"' in template  # VmStk ~1040 KiB, twice, a power of two
    rendered = pylos("manifest", "deep.manifest.template", "deep.manifest", cwd=app)
    assert rendered.returncode == 0, rendered.stderr
    ran = pylos("run", "deep", cwd=app)
    assert (ran.returncode, ran.stdout) == (0, result.stdout), ran.stderr
    (app / "small.manifest.template").write_text(template.replace('sys.stack.size = "4M"', ""))
    assert pylos("manifest", "small.manifest.template", "small.manifest", cwd=app).returncode == 0
    assert pylos("run", "small", cwd=app).returncode == 128 + signal.SIGSEGV


def test_threads_and_stack_limit_observed(app: Path) -> None:
    require_python()
    (app / "threads.py").write_text(
        "import threading\nbarrier = threading.Barrier(5)\n"
        "workers = [threading.Thread(target=barrier.wait) for _ in range(4)]\n"
        "for w in workers: w.start()\nbarrier.wait()\nfor w in workers: w.join()\n"
        "print('threads done')\n")
    result, _ = trace(app, PYTHON, "threads.py")
    assert result.returncode == 0, result.stderr
    template = (app / "python3.manifest.template").read_text()
    assert "at most 5 at a time in one process" in template
    assert "sgx.max_threads = 7" in template
    assert pylos("manifest", "python3.manifest.template", "python3.manifest",
                 cwd=app).returncode == 0
    ran = pylos("run", "python3", cwd=app)
    assert (ran.returncode, ran.stdout) == (0, "threads done\n"), ran.stderr
    result, _ = trace(app, "bash", "-c", "ulimit -s 16384; ulimit -s")
    assert result.stdout == "16384\n"
    template = (app / "bash.manifest.template").read_text()
    assert 'sys.stack.size = "16M"' in template
