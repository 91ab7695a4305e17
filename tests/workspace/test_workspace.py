"""A built workspace end to end: `pylos run` by path, the entry rules, tampering, the
persistent writable layer, the exec server."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from pylos.workspace.workspace import build_workspace

from support import PYLOS, run_pylos


def test_run_hello(workspace: Path):
    result = run_pylos("run", "/bin/wsprog", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello World\n"


def test_argv_env_and_cwd_follow_occlum_rules(workspace: Path):
    """argv[0] is the basename; env = env.default + host values of env.untrusted names only."""
    result = run_pylos("run", "/bin/wsprog", "argv", "x y", cwd=workspace,
                       env={"EXAMPLE": "from-host", "SECRET_HOST_VAR": "leak"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["argv[0]=wsprog", "argv[1]=argv", "argv[2]=x y"]
    env = sorted(line for line in lines if line.startswith("env "))
    assert env == ["env EXAMPLE=from-host", "env OCCLUM=yes"]
    assert "cwd=/" in lines


def test_paths_outside_entry_points_are_refused(workspace: Path):
    for path in ("/lib64/ld-linux-x86-64.so.2", "/bin/../lib64/ld-linux-x86-64.so.2",
                 "bin/wsprog", "/binx/wsprog"):
        result = run_pylos("run", path, cwd=workspace)
        assert result.returncode == 127, (path, result.stderr)
        assert "ERROR: cannot run" in result.stderr


def test_tampered_image_file_is_refused(workspace: Path):
    program = workspace / "image" / "bin" / "wsprog"
    program.write_bytes(program.read_bytes() + b"\0")
    result = run_pylos("run", "/bin/wsprog", cwd=workspace)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Hash of trusted file" in result.stderr and "wsprog" in result.stderr


def test_tampered_library_is_refused(workspace: Path):
    libc = next((workspace / "image" / "lib").rglob("libc.so.6"))
    data = bytearray(libc.read_bytes())
    data[-1] ^= 0xFF
    libc.write_bytes(bytes(data))
    result = run_pylos("run", "/bin/wsprog", cwd=workspace)
    assert result.returncode != 0 and "Hello" not in result.stdout
    assert "libc.so.6" in result.stderr


def test_file_added_to_image_after_build_is_not_runnable(workspace: Path, wsprog: Path):
    (workspace / "image" / "bin" / "late").write_bytes(wsprog.read_bytes())
    (workspace / "image" / "bin" / "late").chmod(0o755)
    result = run_pylos("run", "/bin/late", cwd=workspace)
    assert result.returncode != 0 and result.stdout == ""


def test_edited_measured_config_is_refused(workspace: Path):
    """Entry points come from the signed build, not from a file edited afterwards."""
    config = workspace / "build" / "pylos" / "config.marshal"
    config.write_bytes(config.read_bytes().replace(b"/bin", b"/lib"))
    result = run_pylos("run", "/bin/wsprog", cwd=workspace)
    assert result.returncode == 2
    assert "does not match the signed manifest" in result.stderr


def test_root_is_a_union_over_the_image(workspace: Path):
    # Occlum's unionfs root: files may be made anywhere; the image on the host never changes
    # (the layer above lives in enclave memory; /root is the persistent encrypted layer).
    before = {p: p.read_bytes() for p in (workspace / "image").rglob("*") if p.is_file()}
    result = run_pylos("run", "/bin/wsprog", "write", "/bin/new", "x", cwd=workspace)
    assert result.returncode == 0, result.stderr
    result = run_pylos("run", "/bin/wsprog", "write", "/etc/hosts", "changed", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert {p: p.read_bytes() for p in (workspace / "image").rglob("*") if p.is_file()} == before
    # each run starts from the image again
    assert run_pylos("run", "/bin/wsprog", "cat", "/etc/hosts", cwd=workspace
                     ).stdout == "127.0.0.1 localhost\n"


def test_host_mount_does_not_expose_the_image_writably(workspace: Path, key: Path):
    """Occlum's template mounts the workspace at /host, read-write: programs create host
    files there, new ones included. The image, build/, run/ and Occlum.json under it stay
    read-only, or a program could rewrite its own trusted files."""
    (workspace / "shared").mkdir()
    build_workspace(workspace, key)
    for target in ("/host/shared/out.txt", "/host/new-after-build.txt"):
        ok = run_pylos("run", "/bin/wsprog", "write", target, "hi", cwd=workspace)
        assert ok.returncode == 0, ok.stderr
        assert (workspace / target.removeprefix("/host/")).read_text() == "hi"
    for target in ("/host/image/bin/wsprog", "/host/image/bin/evil", "/host/Occlum.json",
                   "/host/build/pylos/config.marshal", "/host/build/new", "/host/run/new",
                   "/.pylos/server.py"):
        bad = run_pylos("run", "/bin/wsprog", "write", target, "x", cwd=workspace)
        assert bad.returncode == 3, (target, bad.stdout, bad.stderr)
    assert not (workspace / "image" / "bin" / "evil").exists()
    assert not (workspace / "build" / "new").exists()


def test_root_persists_across_runs_and_rebuilds_until_reset(workspace: Path, key: Path):
    assert run_pylos("run", "/bin/wsprog", "write", "/root/data.txt", "kept", cwd=workspace
                     ).returncode == 0
    again = run_pylos("run", "/bin/wsprog", "cat", "/root/data.txt", cwd=workspace)
    assert again.stdout == "kept"
    # On the host the layer holds Gramine protected files only, sealed to MRSIGNER.
    stored = (workspace / "run" / "upper" / "root" / "data.txt").read_bytes()
    assert b"kept" not in stored and len(stored) == 4096  # one PF metadata node
    build_workspace(workspace, key)
    rebuilt = run_pylos("run", "/bin/wsprog", "cat", "/root/data.txt", cwd=workspace)
    assert rebuilt.stdout == "kept"
    result = run_pylos("build", "--reset", "--sign-key", str(key), cwd=workspace)
    assert result.returncode == 0, result.stderr
    gone = run_pylos("run", "/bin/wsprog", "cat", "/root/data.txt", cwd=workspace)
    assert gone.returncode == 3 and gone.stdout == ""


def test_layer_is_sealed_to_the_signer(workspace: Path, tmp_path: Path):
    """Another signing key means another MRSIGNER: the layer's files cannot be opened."""
    assert run_pylos("run", "/bin/wsprog", "write", "/root/data.txt", "secret", cwd=workspace
                     ).returncode == 0
    other = tmp_path / "other-key.pem"
    assert run_pylos("gen-key", str(other)).returncode == 0
    build_workspace(workspace, other)
    result = run_pylos("run", "/bin/wsprog", "cat", "/root/data.txt", cwd=workspace)
    assert result.returncode == 3 and "secret" not in result.stdout


def test_image_root_files_are_copied_up_once(workspace: Path, key: Path):
    (workspace / "image" / "root" / "seed.txt").write_text("from image")
    build_workspace(workspace, key)
    assert b"from image" not in (workspace / "run/upper/root/seed.txt").read_bytes()
    seeded = run_pylos("run", "/bin/wsprog", "cat", "/root/seed.txt", cwd=workspace)
    assert seeded.stdout == "from image", seeded.stderr
    run_pylos("run", "/bin/wsprog", "write", "/root/seed.txt", "changed", cwd=workspace)
    build_workspace(workspace, key)  # the writable layer wins over the image
    assert run_pylos("run", "/bin/wsprog", "cat", "/root/seed.txt", cwd=workspace
                     ).stdout == "changed"


def test_print_and_status(workspace: Path):
    result = run_pylos("print", "mrenclave", cwd=workspace)
    assert result.returncode == 0 and len(result.stdout.strip()) == 64
    sigview = run_pylos("sigstruct-view", "--json", "build/enclave.sig", cwd=workspace)
    fields = json.loads(sigview.stdout)
    assert fields["mr_enclave"] == result.stdout.strip()
    assert run_pylos("print", "mrsigner", cwd=workspace).stdout.strip() == fields["mr_signer"]
    assert run_pylos("status", cwd=workspace).stdout.strip() == "built"


def test_outside_a_workspace_commands_say_so(tmp_path: Path):
    result = run_pylos("build", cwd=tmp_path)
    assert result.returncode == 2 and "no Occlum.json" in result.stderr


def test_new_and_init_refuse_existing(tmp_path: Path):
    assert run_pylos("new", str(tmp_path / "w")).returncode == 0
    assert (tmp_path / "w" / "image" / "lib64" / "ld-linux-x86-64.so.2").is_file()
    assert (tmp_path / "w" / "image" / "etc" / "hosts").read_text() == "127.0.0.1 localhost\n"
    again = run_pylos("new", str(tmp_path / "w"))
    assert again.returncode == 2 and "already exists" in again.stderr
    init = run_pylos("init", cwd=tmp_path / "w")
    assert init.returncode == 2 and "already a workspace" in init.stderr


# ---- server mode ------------------------------------------------------------------------
def _exec(ws: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYLOS, "exec", *args], cwd=ws, capture_output=True, text=True,
                          input=stdin, timeout=60)


@pytest.fixture
def server(workspace: Path):
    result = run_pylos("start", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert run_pylos("status", cwd=workspace).stdout.startswith("running")
    yield workspace
    stopped = run_pylos("stop", cwd=workspace)
    assert stopped.returncode == 0, stopped.stderr
    assert run_pylos("status", cwd=workspace).stdout.strip() == "built"


def test_server_sequential_and_concurrent_execs(server: Path):
    for i in range(20):
        result = _exec(server, "/bin/wsprog", "exit", str(i % 7), f"seq{i}")
        assert (result.returncode, result.stdout) == (i % 7, f"tag seq{i}\n"), result.stderr
    results: dict[int, subprocess.CompletedProcess] = {}

    def one(i: int) -> None:
        results[i] = _exec(server, "/bin/wsprog", "exit", str(10 + i), f"par{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(4):
        assert (results[i].returncode, results[i].stdout) == (10 + i, f"tag par{i}\n")


def test_server_forwards_stdio_and_shares_the_writable_layer(server: Path):
    result = _exec(server, "/bin/wsprog", "stdin", stdin="hello enclave\n")
    assert (result.returncode, result.stdout, result.stderr) == (5, "HELLO ENCLAVE\n",
                                                                 "stdin done\n")
    assert _exec(server, "/bin/wsprog", "write", "/root/x", "1").returncode == 0
    assert _exec(server, "/bin/wsprog", "cat", "/root/x").stdout == "1"


def test_server_changes_the_union_root_for_its_lifetime(server: Path):
    assert _exec(server, "/bin/wsprog", "write", "/etc/hosts", "changed").returncode == 0
    assert _exec(server, "/bin/wsprog", "write", "/lib/made", "made").returncode == 0
    assert _exec(server, "/bin/wsprog", "cat", "/etc/hosts").stdout == "changed"
    assert _exec(server, "/bin/wsprog", "cat", "/lib/made").stdout == "made"
    assert (server / "image" / "etc" / "hosts").read_text() == "127.0.0.1 localhost\n"
    assert not (server / "image" / "lib" / "made").exists()


def test_copy_up_of_a_tampered_image_file_is_refused(server: Path):
    # Changing a file of the image copies it up: from bytes the host could have swapped.
    assert _exec(server, "/bin/wsprog", "append", "/lib/made", "x").returncode == 0  # made
    (server / "image" / "etc" / "hosts").write_text("10.6.6.6 localhost\n")
    result = _exec(server, "/bin/wsprog", "append", "/etc/hosts", "x")
    assert result.returncode == 3 and "Operation not permitted" in result.stderr
    assert "10.6.6.6" not in _exec(server, "/bin/wsprog", "cat", "/etc/hosts").stdout
    log = (server / "run" / "server.log").read_text()
    assert "Hash of trusted file" in log and "/etc/hosts" in log


def test_server_refuses_paths_outside_entry_points(server: Path):
    result = _exec(server, "/lib64/ld-linux-x86-64.so.2", "/bin/wsprog")
    assert result.returncode == 127 and "not under an entry point" in result.stderr
    result = _exec(server, "/bin/../lib64/ld-linux-x86-64.so.2")
    assert result.returncode == 127 and "'..'" in result.stderr
    missing = _exec(server, "/bin/missing")
    assert missing.returncode == 127


def test_exec_programs_stay_confined(server: Path):
    """Programs the server forks run under the enclave's seccomp filter like any other."""
    result = _exec(server, "/bin/wsprog", "escape")
    assert result.stdout == "unshare Operation not permitted\nmount Operation not permitted\n"
    assert (server / "run/server/exec.sock").stat().st_mode & 0o777 == 0o600


def test_server_refuses_a_tampered_program(server: Path):
    program = server / "image" / "bin" / "wsprog"
    program.write_bytes(program.read_bytes() + b"\0")
    result = _exec(server, "/bin/wsprog")
    assert result.returncode == 127 and result.stdout == ""


def test_stop_ends_running_programs(server: Path):
    sleeper = subprocess.Popen([PYLOS, "exec", "/bin/wsprog", "sleep", "60"], cwd=server,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert run_pylos("stop", cwd=server).returncode == 0
        sleeper.wait(timeout=30)
        assert sleeper.returncode != 0
    finally:
        sleeper.kill()
        sleeper.wait()
    assert run_pylos("start", cwd=server).returncode == 0  # the fixture stops it again


def test_tampered_server_does_not_start(workspace: Path):
    server_py = workspace / "build" / "pylos" / "server.py"
    server_py.write_text(server_py.read_text().replace("0o600", "0o666"))
    result = run_pylos("start", cwd=workspace)
    assert result.returncode == 2 and "did not start" in result.stderr
    assert "server.py" in result.stderr


def test_start_twice_and_exec_without_server(workspace: Path):
    result = _exec(workspace, "/bin/wsprog")
    assert result.returncode == 2 and "not running" in result.stderr
    assert run_pylos("start", cwd=workspace).returncode == 0
    try:
        again = run_pylos("start", cwd=workspace)
        assert again.returncode == 2 and "already running" in again.stderr
    finally:
        assert run_pylos("stop", cwd=workspace).returncode == 0
    assert not (workspace / "run" / "server" / "exec.sock").exists()
    assert os.listdir(workspace / "run" / "server") == []
