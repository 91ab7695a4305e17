"""Identity-mount mode: where Linux namespaces are unavailable, pylos says so, runs with
enclave paths equal to host paths, and still enforces the file policy (runtime/identity.py).

A host without user namespaces is made for real: pylos runs inside a user namespace whose
`user.max_user_namespaces` is 0, so its own unshare fails as on such hosts.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from pylos.runtime import landlock

from support import PYLOS, run_pylos

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux")

NO_NAMESPACES = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'


def template(root: Path) -> str:
    return f"""\
libos.entrypoint = "{root}/fsops"
loader.log_level = "warning"
loader.insecure__use_cmdline_argv = true
loader.env.LD_LIBRARY_PATH = "{{{{ gramine.runtimedir() }}}}"
fs.root.uri = "file:/"
fs.start_dir = "{root}"
fs.mounts = []
sgx.trusted_files = [
  "file:{root}/fsops",
  "file:{root}/trusted.txt",
  "file:/lib64/ld-linux-x86-64.so.2",
  "file:{{{{ gramine.runtimedir() }}}}/",
]
sgx.allowed_files = [ "file:{root}/data/" ]
"""


@pytest.fixture
def app(tmp_path: Path, programs: Path) -> Path:
    root = tmp_path / "app"
    (root / "data").mkdir(parents=True)
    shutil.copy(programs / "fsops", root / "fsops")
    (root / "trusted.txt").write_text("trusted\n")
    (tmp_path / "secret.txt").write_text("TOPSECRET\n")
    (root / "app.manifest.template").write_text(template(root))
    result = run_pylos("manifest", "app.manifest.template", "app.manifest", cwd=root)
    assert result.returncode == 0, result.stderr
    return root


def run_without_namespaces(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-Ur", "sh", "-c", NO_NAMESPACES, "sh", PYLOS, "run",
                           "app", *args], cwd=root, capture_output=True, text=True, timeout=120)


def test_runs_with_identity_mounts_and_says_so(app: Path) -> None:
    result = run_without_namespaces(app, "read", "trusted.txt")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "read ok\n"
    assert "Linux namespaces are unavailable here (unshare: No space left on device): " \
           "running with identity mounts" in result.stderr
    assert result.stderr.count("namespaces are unavailable") == 1


@pytest.mark.skipif(landlock.abi() < 3, reason="needs Landlock ABI 3 (truncate)")
def test_policy_holds_without_namespaces(app: Path) -> None:
    secret = app.parent / "secret.txt"
    outside = app / "created-outside.txt"
    result = run_without_namespaces(
        app, "read", str(secret), "trunc", str(secret), "write", str(outside),
        "unlink", str(secret), "rename", str(secret), "data/stolen.txt",
        "mkdir", str(app / "newdir"), "trunc", "trusted.txt",
        "write", "data/new.txt", "read", "data/new.txt", "unlink", "data/new.txt")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "read EACCES", "trunc EACCES", "write EACCES", "unlink EACCES", "rename EACCES",
        "mkdir EACCES", "trunc EACCES", "write ok", "read ok", "unlink ok"]
    assert secret.read_text() == "TOPSECRET\n"  # neither truncated, removed nor moved
    assert not outside.exists() and not (app / "newdir").exists()
    assert (app / "trusted.txt").read_text() == "trusted\n"


def test_manifest_needing_a_view_is_refused_with_the_fix(app: Path) -> None:
    text = (app / "app.manifest.template").read_text()
    (app / "app.manifest.template").write_text(
        text.replace("fs.mounts = []", 'fs.mounts = [ { type = "tmpfs", path = "/scratch" } ]'))
    assert run_pylos("manifest", "app.manifest.template", "app.manifest",
                     cwd=app).returncode == 0
    result = run_without_namespaces(app, "read", "trusted.txt")
    assert result.returncode == 2 and result.stdout == ""
    assert "Linux namespaces are unavailable here" in result.stderr
    assert "needs path translation: the tmpfs mount at '/scratch'" in result.stderr
    assert "Fix: allow user namespaces" in result.stderr


def test_metadata_of_host_files_stays_out_of_reach(app: Path) -> None:
    # Landlock has no right for chmod, chown or utime: without namespaces they are trapped
    # and judged like opens that write (runtime/syscalls/metadata.py).
    secret = app.parent / "secret.txt"
    secret.chmod(0o644)
    os.utime(secret, (1_000_000_000, 1_000_000_000))
    (app / "data" / "mine.txt").write_text("mine\n")
    result = run_without_namespaces(
        app, "chmod", str(secret), "600", "touch", str(secret), "chmod", str(app), "700",
        "chmod", "trusted.txt", "600", "chmod", "data/mine.txt", "600", "touch", "data/mine.txt",
        "chmod", "data", "750")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "chmod EPERM", "touch EPERM", "chmod EPERM", "chmod EPERM", "chmod ok", "touch ok",
        "chmod ok"]
    st = secret.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o644, 1_000_000_000)
    assert stat.S_IMODE((app / "data" / "mine.txt").stat().st_mode) == 0o600
    assert "Disallowing changing the attributes of '" + str(secret) in result.stderr
