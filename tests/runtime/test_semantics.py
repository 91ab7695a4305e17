"""Manifest semantics at run time: logging, environment files, identity, limits, signals."""

from __future__ import annotations

import signal
import subprocess
import time

from support import PYLOS


def test_log_file_and_trace(make_enclave):
    enclave = make_enclave("escape", extra='loader.log_file = "pylos.log"\n', log_level="trace")
    result = enclave.run("open", "/trusted.txt")
    assert result.stdout.startswith("READ:trusted content")
    log = (enclave.root / "pylos.log").read_text()
    assert 'openat("/trusted.txt", O_RDONLY) = fd: trusted, verified' in log
    assert 'execve("/app") = verified, continue' in log


def test_env_src_file(make_enclave):
    enclave = make_enclave("/bin/sh", extra='loader.env_src_file = "file:envfile"\n'
                           'loader.env.B = "from manifest"\n')
    (enclave.root / "envfile").write_bytes(b"A=from file\0B=overridden\0")
    result = enclave.run("-c", 'echo "$A|$B"')
    assert result.stdout == "from file|from manifest\n"


def test_limits(make_enclave):
    enclave = make_enclave("/bin/sh", extra='sys.fds.limit = 123\nsys.stack.size = "1M"\n')
    assert enclave.run("-c", "ulimit -n; ulimit -s").stdout.split() == ["123", "1024"]


def test_identity_and_umask(make_enclave):
    import os

    previous = os.umask(0o027)
    try:
        default = make_enclave("ids").run().stdout
        mapped = make_enclave("ids", extra="loader.uid = 1000\nloader.gid = 1001\n").run().stdout
    finally:
        os.umask(previous)
    assert default == "uid=0 gid=0 euid=0 umask=027\n"
    assert mapped == "uid=1000 gid=1001 euid=1000 umask=027\n"


def test_disable_aslr(make_enclave):
    def stack_base(extra: str) -> str:
        enclave = make_enclave("/bin/sh", extra=extra)
        maps = enclave.run("-c", "cat /proc/self/maps").stdout
        return next(line for line in maps.splitlines() if "[stack]" in line).split("-")[0]

    fixed = 'loader.insecure__disable_aslr = true\n'
    assert stack_base(fixed) == stack_base(fixed)
    assert stack_base("") != stack_base("")


def test_unhonoured_keys_warn_once_each(make_enclave):
    enclave = make_enclave("hello", extra='sys.allowed_ioctls = [ { request_code = 1 } ]\n'
                           'sgx.preheat_enclave = true\n', log_level="warning")
    result = enclave.run()
    assert result.returncode == 0
    assert result.stderr.count("sys.allowed_ioctls is not honoured") == 1
    assert result.stderr.count("sgx.preheat_enclave is not honoured") == 1
    assert "enclave memory limit (sgx.enclave_size): 268435456 bytes" in result.stderr


def test_resolv_conf_synthesized(make_enclave):
    enclave = make_enclave("/bin/sh",
                           extra="sys.enable_extra_runtime_domain_names_conf = true\n")
    result = enclave.run("-c", "cat /etc/resolv.conf")
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        assert line.split()[0] in ("nameserver", "search", "options")


def _signal_trapping_program(enclave, sig: signal.Signals, handler: str
                             ) -> subprocess.CompletedProcess:
    """Start a shell that traps `sig` with `handler`, wait until it runs, send `sig` to
    `pylos run` and collect the outcome."""
    name = sig.name.removeprefix("SIG")
    script = f"trap '{handler}' {name}; : > /data/ready; while :; do sleep 0.05; done"
    process = subprocess.Popen([PYLOS, "run", "app", "-c", script], cwd=enclave.root,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = enclave.root / "data" / "ready"
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline, "the program never started"
        time.sleep(0.02)
    process.send_signal(sig)
    out, err = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_sigint_is_forwarded_to_the_program(make_enclave):
    result = _signal_trapping_program(make_enclave("/bin/sh"), signal.SIGINT,
                                      "echo got INT; exit 3")
    assert "got INT" in result.stdout and result.returncode == 3


def test_sigterm_injected_once_when_enabled(make_enclave):
    enclave = make_enclave("/bin/sh", extra="sys.enable_sigterm_injection = true\n")
    result = _signal_trapping_program(enclave, signal.SIGTERM, "echo got TERM; exit 4")
    assert "got TERM" in result.stdout and result.returncode == 4


def test_sigterm_ends_the_enclave_without_injection(make_enclave):
    result = _signal_trapping_program(make_enclave("/bin/sh"), signal.SIGTERM, "echo got TERM")
    assert "got TERM" not in result.stdout
    assert result.returncode == 128 + signal.SIGKILL


def test_program_cannot_see_or_signal_the_supervisor(make_enclave):
    enclave = make_enclave("/bin/sh")
    result = enclave.run("-c", "for p in /proc/[0-9]*; do echo ${p#/proc/}; done | sort -n | "
                               "head -3; kill -TERM 0; echo survived")
    pids = [int(p) for p in result.stdout.split() if p.isdigit()]
    assert pids and max(pids) < 50, "only the enclave's own processes are visible"
