"""The verified view (runtime/fs/verified.py): the kernel serves what the view shows, the
server verifies it once, and nothing else ever gets served."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pylos.runtime.fs.fuse import Context
from pylos.runtime.fs.verified import VerifiedFs
from pylos.runtime.policy import TrustedFiles

from runtime_support import TEMPLATE, shell_template
from support import PYLOS

READLINK = '  "file:/bin/readlink",\n'


def _shell_enclave(make_enclave):
    enclave = make_enclave("/bin/sh")
    enclave.render(template=shell_template().replace('  "file:app",\n',
                                                      '  "file:app",\n' + READLINK))
    return enclave


def test_a_trusted_open_is_the_kernels(make_enclave):
    # No copy, no trap: the descriptor is of the view's own file, at its own path.
    enclave = _shell_enclave(make_enclave)
    result = enclave.run("-c", "exec 3</trusted.txt; readlink /proc/self/fd/3; cat <&3")
    assert result.stdout == "/trusted.txt\ntrusted content\n", result.stderr
    trapped = enclave.run("-c", "exec 3</trusted.txt; readlink /proc/self/fd/3",
                          env={**os.environ, "PYLOS_VERIFIED_VIEW": "0"})
    assert trapped.stdout.startswith("/memfd:pylos-trusted"), trapped.stderr


def test_a_verified_file_the_host_truncates_and_removes_keeps_its_bytes(make_enclave):
    enclave = _shell_enclave(make_enclave)
    trusted = enclave.root / "trusted.txt"

    def host_side() -> None:
        deadline = time.monotonic() + 60
        while not (enclave.root / "data" / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        trusted.write_text("")  # shrunk
        trusted.unlink()  # then gone
        (enclave.root / "data" / "go").write_text("")

    worker = threading.Thread(target=host_side)
    worker.start()
    result = enclave.run("-c", "cat /trusted.txt; : > /data/ready; "
                         "while [ ! -e /data/go ]; do sleep 0.05; done; cat /trusted.txt")
    worker.join()
    assert result.stdout == "trusted content\ntrusted content\n", result.stderr


def test_a_file_neither_trusted_nor_allowed_is_seen_never_read(make_enclave):
    enclave = _shell_enclave(make_enclave)
    (enclave.root / "data" / "sub").mkdir()
    result = enclave.run("-c", "cat /plain.txt; cat /plain.txt; cat /bin/ls; /bin/ls; "
                         "[ -f /bin/ls ] && echo seen; echo done")
    assert result.stdout == "seen\ndone\n"
    # said at each read the kernel asks for (a read may be tried more than once)
    assert result.stderr.count("Disallowing access to file '/plain.txt'; file is not "
                               "allowed.") >= 2, result.stderr
    assert "Disallowing access to file '/bin/ls'; file is not allowed." in result.stderr


def _view_server(supervisor: int) -> int | None:
    for child in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
        if Path(f"/proc/{child}/comm").read_text().strip() == "pylos-view":
            return int(child)
    return None


def test_a_dead_view_server_ends_the_enclave(make_enclave):
    enclave = _shell_enclave(make_enclave)
    process = subprocess.Popen(
        [PYLOS, "run", "app", "-c", "while :; do cat /trusted.txt >/dev/null; sleep 0.05; done"],
        cwd=enclave.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        server = None
        while server is None and time.monotonic() < deadline:
            time.sleep(0.1)
            server = _view_server(process.pid)
        assert server is not None, "no verified view server"
        time.sleep(0.3)
        os.kill(server, signal.SIGKILL)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert "the verified view's server has died: ending the enclave" in stderr


def _tree(tmp_path: Path, count: int, size: int) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "tree"
    root.mkdir()
    expected = {}
    for index in range(count):
        path = root / f"f{index}"
        data = bytes([index % 251]) * size
        path.write_bytes(data)
        expected[str(path)] = hashlib.sha256(data).hexdigest()
    return root, expected


def _driver(root: Path, expected: dict[str, str], budget: int, lines: list) -> VerifiedFs:
    return VerifiedFs([str(root)], TrustedFiles(expected, lambda *_: None), expected, [],
                      False, lambda host: host, lambda level, text: lines.append(text),
                      budget=budget)


def test_verified_copies_stay_within_the_budget(tmp_path: Path):
    # A program opening many distinct trusted files: copies beyond the budget are dropped
    # and verified again when their pages are needed again.
    root, expected = _tree(tmp_path, 2000, 4096)
    driver = _driver(root, expected, 64 << 10, [])
    program = Context(0, 0, 2)
    for index in range(2000):
        driver.getattr(program, f"0/f{index}", None)
        assert driver.copies.held <= 64 << 10
    assert len(driver.copies) == 16 and driver.bytes_hashed == 2000 * 4096
    assert driver.read_node(program, "0/f0", 0, 8) == bytes([0]) * 8  # verified again
    assert driver.bytes_hashed == 2001 * 4096


def test_an_evicted_copy_never_turns_into_host_bytes(tmp_path: Path):
    root, expected = _tree(tmp_path, 3, 4096)
    lines: list[str] = []
    driver = _driver(root, expected, 4096, lines)
    program = Context(0, 0, 2)
    for index in range(3):
        driver.getattr(program, f"0/f{index}", None)
    assert str(root / "f0") not in driver.copies  # evicted
    (root / "f0").write_bytes(b"TAMPERED" * 512)
    with pytest.raises(OSError) as refused:
        driver.read_node(program, "0/f0", 0, 8)
    assert refused.value.errno == errno.EIO
    assert any("Hash of trusted file" in line for line in lines)
    assert driver.getattr(program, "0/f0", None).size == 4096  # what was verified
    (root / "f1").unlink()
    driver.getattr(program, "0/f2", None)  # f1's copy goes
    with pytest.raises(OSError):
        driver.read_node(program, "0/f1", 0, 8)


def test_a_tampered_trusted_file_is_refused_at_lookup(tmp_path: Path):
    root, expected = _tree(tmp_path, 1, 100)
    (root / "f0").write_bytes(b"x" * 100)
    lines: list[str] = []
    driver = _driver(root, expected, 1 << 20, lines)
    with pytest.raises(OSError) as refused:
        driver.getattr(Context(0, 0, 2), "0/f0", None)
    assert refused.value.errno == errno.EPERM
    assert lines and lines[0].startswith("Hash of trusted file")


def test_copies_stay_within_the_descriptors_the_server_has(tmp_path: Path):
    # Each held copy is a descriptor: the server keeps fewer copies than it may open.
    root, expected = _tree(tmp_path, 300, 64)
    driver = VerifiedFs([str(root)], TrustedFiles(expected, lambda *_: None), expected, [],
                        False, lambda host: host, lambda *_: None, max_copies=40)
    program = Context(0, 0, 2)
    for index in range(300):
        driver.getattr(program, f"0/f{index}", None)
        assert len(driver.copies) <= 40
    assert driver.read_node(program, "0/f0", 0, 4) == bytes([0]) * 4  # verified again


@pytest.mark.parametrize("view", ["verified", "trapped"])
def test_thousands_of_small_trusted_files_under_a_low_open_files_limit(make_enclave, view):
    # Python's standard library is thousands of small trusted files; a host whose open-files
    # limit is 256 must still serve them all (each verified copy is one of the server's
    # descriptors, so copies beyond what it may open are evicted, not refused).
    import resource

    enclave = make_enclave("/bin/sh")
    many = enclave.root / "many"
    many.mkdir()
    count = 1500
    for index in range(count):
        (many / f"f{index}").write_text(f"{index}\n")
    enclave.render(template=shell_template().replace(
        '  "file:app",\n', '  "file:app",\n  "file:many/",\n'))

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    script = ("n=0; for f in /many/*; do read x < $f || exit 1; n=$((n+x)); done; "
              "echo $n")
    env = {**os.environ, "PYLOS_VERIFIED_VIEW": "1" if view == "verified" else "0"}
    result = subprocess.run([PYLOS, "run", "app", "-c", script], cwd=enclave.root, env=env,
                            capture_output=True, text=True, timeout=300, preexec_fn=low_limit)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{sum(range(count))}\n", result.stderr


def test_the_supervisors_copies_stay_within_budget_and_descriptors(tmp_path: Path):
    # The trapped view's copies (one memfd each) are bounded too; a closed copy is made and
    # verified again at the next open.
    root, expected = _tree(tmp_path, 200, 4096)
    trusted = TrustedFiles(expected, lambda *_: None, budget=64 << 10, max_copies=8)
    for index in range(200):
        path = str(root / f"f{index}")
        fd = os.open(path, os.O_RDONLY)
        try:
            copy = trusted.verified_copy(fd, path, expected[path])
            assert os.pread(copy.memfd, 4, 0) == bytes([index % 251]) * 4
        finally:
            os.close(fd)
        assert len(trusted.copies) <= 8
    assert trusted.bytes_hashed == 200 * 4096
    fd = os.open(str(root / "f0"), os.O_RDONLY)
    try:
        trusted.verified_copy(fd, str(root / "f0"), expected[str(root / "f0")])
    finally:
        os.close(fd)
    assert trusted.bytes_hashed == 201 * 4096  # closed, so verified again


def test_a_mount_inside_a_verified_directory_keeps_it_one_bind(make_enclave):
    # /lib (the runtime directory, served by the verified view) with a mount inside it: the
    # view shows the mount point, so /lib stays one bind and its unused trusted files are
    # not verified at start (init used to bind, and so hash, each of them).
    enclave = _shell_enclave(make_enclave)
    enclave.render(extra="", log_level="debug", template=shell_template().replace(
        '  { type = "tmpfs", path = "/tmp" },',
        '  { type = "tmpfs", path = "/tmp" },\n  { path = "/lib/extra", uri = "file:data" },'
    ).replace('  "file:app",\n', '  "file:app",\n' + READLINK))
    result = enclave.run("-c", "cat /lib/extra/ok.txt; cat /proc/self/mountinfo")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("allowed content\n"), result.stderr
    lib_mounts = [line.split()[4] for line in result.stdout.splitlines()[1:]
                  if line.split()[4].startswith("/lib/")]
    assert lib_mounts == ["/lib/extra"], result.stdout
    assert "libnss_hesiod" not in result.stderr  # never used, so never verified



def test_a_view_that_cannot_be_built_ends_the_run_promptly(make_enclave):
    """The view's server starts before init builds the view: when init fails (a mount's
    host path is missing), the run ends with init's error, and no server is left waiting
    for a view that never comes."""
    enclave = make_enclave("hello")
    enclave.render(template=TEMPLATE.replace(
        '  { path = "/app", uri = "file:app" },\n',
        '  { path = "/app", uri = "file:app" },\n  { path = "/gone", uri = "file:gone" },\n'))
    started = time.monotonic()
    result = enclave.run(timeout=30)
    assert result.returncode != 0
    assert "cannot mount" in result.stderr and "at '/gone': No such file or directory" in (
        result.stderr), result.stderr
    assert time.monotonic() - started < 10
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit()
                and _comm(pid) == "pylos-view"]


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
