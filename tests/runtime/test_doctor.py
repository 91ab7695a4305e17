"""`pylos doctor` as a user runs it, with checks made to fail for real: a user namespace whose
`user.max_user_namespaces` is 0, a mount namespace whose /dev/fuse is not the device."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from support import PYLOS

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux")


def doctor(prepare: str = "true") -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-Urm", "sh", "-c", f'{prepare} && exec "$@"', "sh",
                           PYLOS, "doctor"], capture_output=True, text=True, timeout=60)


def test_everything_here_is_ok():
    result = doctor()
    assert result.returncode == 0, result.stdout
    assert not any(line.startswith("FIX") for line in result.stdout.splitlines())
    assert "OK   /dev/fuse, for encrypted mounts and /dev/attestation" in result.stdout
    assert "OK   Landlock ABI >= 6" in result.stdout
    assert result.stdout.endswith("pylos can run enclaves on this machine (simulated SGX: no "
                                  "hardware used)\n")


def test_user_namespaces_off_names_the_sysctl():
    result = doctor("echo 0 > /proc/sys/user/max_user_namespaces")
    assert result.returncode == 4, result.stdout
    assert ("FIX  user, mount, PID and UTS namespaces, and a view built in them\n"
            "     fix: sysctl user.max_user_namespaces=15000; without them pylos runs with "
            "identity mounts") in result.stdout


def test_no_fuse_device_is_a_fix_line_not_a_failure(tmp_path: Path):
    not_a_device = tmp_path / "fuse"
    not_a_device.touch()
    result = doctor(f"mount --bind {not_a_device} /dev/fuse")
    assert result.returncode == 128, result.stdout
    assert "FIX  /dev/fuse, for encrypted mounts and /dev/attestation\n     fix: modprobe fuse" \
        in result.stdout
    assert "pylos can run enclaves here, without what FIX lines name (exit status 128" in (
        result.stdout)
