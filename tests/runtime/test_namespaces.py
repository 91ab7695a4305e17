"""`namespaces_available()`: the probe `pylos doctor` and the test suite rely on."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from pylos.runtime.namespaces import namespaces_available


def test_this_machine_builds_views():
    assert namespaces_available() == []


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_refused_namespaces_are_reported_with_the_fix():
    # Inside a user namespace whose own limit of nested user namespaces is 0 (a per-namespace
    # setting: the host's stays as it is), the probe must say what is missing and the fix.
    probe = ("from pylos.runtime.namespaces import namespaces_available; "
             "print(*namespaces_available(), sep='\\n')")
    result = subprocess.run(
        ["unshare", "-Ur", "sh", "-c", 'echo 0 > /proc/sys/user/max_user_namespaces && '
         'exec "$0" -c "$1"', sys.executable, probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("cannot create user, mount, PID and UTS namespaces: unshare: No "
                             "space left on device (fix: sysctl user.max_user_namespaces=15000)\n")
