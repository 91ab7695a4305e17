"""The Occlum examples' own `make check`, as a user runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support import EXAMPLES, PYLOS


def make_check(example: str, tmp_path: Path, key: Path) -> subprocess.CompletedProcess:
    target = tmp_path / example
    # Only the sources, never locally built outputs.
    shutil.copytree(EXAMPLES / example, target, ignore=shutil.ignore_patterns(
        "occlum_workspace", "OUTPUT", "hello_world"))
    env = {**os.environ, "PATH": f"{Path(PYLOS).parent}:{os.environ['PATH']}"}
    try:
        return subprocess.run(["make", f"SGX_SIGNER_KEY={key}", "check"], cwd=target,
                              capture_output=True, text=True, env=env, timeout=300)
    finally:
        # A failed check may leave the exec server running.
        if (target / "occlum_workspace" / "Occlum.json").exists():
            subprocess.run([PYLOS, "stop"], cwd=target / "occlum_workspace",
                           capture_output=True, timeout=60)


@pytest.mark.parametrize("example", ["occlum-hello", "occlum-python"])
def test_example_check(example: str, tmp_path: Path, key: Path, enclave_support: None):
    result = make_check(example, tmp_path, key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ Success ]" in result.stdout
