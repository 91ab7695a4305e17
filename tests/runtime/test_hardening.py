"""Nothing inside the enclave reaches the host or the supervisor, even as root; no open of the
enclave can stall the supervisor. Each test is a real attempt with a real program."""

from __future__ import annotations

import fcntl
import os
import select
import socket
import subprocess
import termios
import time

import pytest

from runtime_support import SECRET
from support import PYLOS


def test_host_kernel_settings_are_read_only(make_enclave):
    # As root, the enclave's uid 0 is the host's: /proc/sys/kernel/core_pattern (which can run
    # a command as host root) would be writable. Written back unchanged, should this fail.
    enclave = make_enclave("/bin/sh")
    result = enclave.run("-c", "cat /proc/sys/kernel/core_pattern > "
                               "/proc/sys/kernel/core_pattern; echo rc=$?; "
                               "cat /proc/sys/kernel/ostype")
    assert "rc=0" not in result.stdout, result.stdout + result.stderr
    assert result.stdout.endswith("Linux\n"), result.stderr


def test_hostname_changes_stay_inside(make_enclave):
    before = socket.gethostname()
    result = make_enclave("hardening").run("sethostname", "pylos-enclave")
    assert result.stdout == "sethostname: OK\nhostname: pylos-enclave\n", result.stderr
    assert socket.gethostname() == before


def test_init_is_out_of_reach(make_enclave, monkeypatch):
    # PID 1 of the enclave runs outside the filter and holds the host's environment.
    monkeypatch.setenv("PYLOS_HOST_ONLY", SECRET)
    enclave = make_enclave("escape")
    for target in ("/proc/1/environ", "/proc/1/mem"):
        result = enclave.run("open", target)
        assert SECRET not in result.stdout
        assert result.stdout == "ERR:EACCES\n", (target, result.stdout, result.stderr)
    writable = enclave.run("write", "/proc/1/mem")
    assert writable.stdout == "ERR:EACCES\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a file of another host user")
def test_supervisor_opens_with_the_programs_rights(make_enclave):
    # The supervisor opens for the program; as host root it could read any user's file.
    enclave = make_enclave("escape")
    private = enclave.root / "data" / "private.txt"
    private.write_text(SECRET + "\n")
    os.chown(private, 65534, 65534)
    private.chmod(0o600)
    result = enclave.run("open", "/data/private.txt")
    assert result.stdout == "ERR:EACCES\n", result.stdout


def test_non_dumpable_programs_are_served(make_enclave):
    # The confined supervisor reads a non-dumpable program's memory with the capabilities it
    # has in the enclave's user namespace (the one the program's image was made in).
    result = make_enclave("hardening").run("nondumpable", "/data/ok.txt")
    assert result.stdout == "open: OK\n", result.stderr


def test_root_inside_cannot_signal_the_supervisor(make_enclave):
    result = make_enclave("/bin/sh").run("-c", "kill -TERM -1; kill -KILL -1; echo alive")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "alive\n"


def test_terminal_input_injection_is_refused(make_enclave):
    result = make_enclave("hardening").run("tiocsti")
    assert result.stdout == "TIOCSTI: EPERM\nTIOCLINUX: EPERM\nTCGETS: ENOTTY\n", result.stderr


@pytest.mark.parametrize("first", ["reader", "writer"])
def test_fifo_between_two_processes(make_enclave, first):
    # The first open waits for the other end, whose open is emulated by the same supervisor.
    result = make_enclave("hardening").run("fifo", "/tmp/fifo", first, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "read: hi\nnonblocking: no, writer status 0\n"


def test_relative_open_after_chdir_and_dirfd(make_enclave):
    relative = make_enclave("/bin/sh").run("-c", "cd /data && cat ok.txt && cd / && "
                                                 "cat data/../data/ok.txt")
    assert relative.stdout == "allowed content\n" * 2, relative.stderr
    dirfd = make_enclave("escape").run("dirfd", "/data", "ok.txt")
    assert dirfd.stdout == "READ:allowed content\n\n"


def run_on_terminal(root, *args: str, timeout: float = 30) -> tuple[int | None, str]:
    """`pylos run app ARGS` with a fresh pseudo-terminal as its controlling terminal."""
    master, slave = os.openpty()
    proc = subprocess.Popen([PYLOS, "run", "app", *args], cwd=root, stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every slave end is closed
                    break
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
        try:
            code: int | None = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, output.decode(errors="replace").replace("\r\n", "\n")


def test_terminal_settings_cannot_stop_the_supervisor(make_enclave):
    # The program owns the terminal and sets TOSTOP: the supervisor's next log line, written
    # from a background process group, must neither stop it (SIGTTOU) nor fail (EIO).
    enclave = make_enclave("/bin/sh")
    text = (enclave.root / "app.manifest.template").read_text()
    enclave.render(template=text.replace('  "file:app",', '  "file:app",\n  "file:/bin/stty",'))
    code, output = run_on_terminal(enclave.root, "-c",
                                   "stty tostop; cat /plain.txt; echo done")
    assert code == 0, output
    assert output.endswith("Disallowing access to file '/plain.txt'; file is not allowed.\n"
                           "cat: /plain.txt: Permission denied\ndone\n"), output
