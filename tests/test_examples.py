"""The examples' own checks (`make check` / `make regression`), as a user runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support import EXAMPLES, PYLOS


def make(example: Path, target: str, key: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(PYLOS).parent}:{os.environ['PATH']}"}
    return subprocess.run(["make", "SGX=1", f"SGX_SIGNER_KEY={key}", target], cwd=example,
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture
def example(tmp_path: Path):
    def copy(name: str) -> Path:
        target = tmp_path / name
        # Only the sources, as a fresh clone has them, never locally built outputs.
        shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns(
            "*.manifest", "*.manifest.sgx", "*.sig", "OUTPUT*", "testdir", "venv", name))
        return target

    return copy


def test_helloworld_check(example, key):
    result = make(example("helloworld"), "check", key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ Success ]" in result.stdout


def test_python_venv_check(example, key):
    """numpy and a local package installed by pip (the package index: as scripts/setup)."""
    result = make(example("python-venv"), "check", key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ Success ]" in result.stdout


def test_bash_regression(example, key):
    result = make(example("bash"), "regression", key)
    assert result.returncode == 0, result.stdout + result.stderr
    for n in range(1, 8):
        assert f"[ Success {n}/7 ]" in result.stdout


def test_python_check(example, key):
    result = make(example("python"), "check", key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ Success 1/4 ]" in result.stdout and "[ Success 2/4 ]" in result.stdout
    # numpy (Debian's python3-numpy, which CI installs) finds BLAS and LAPACK through
    # /etc/alternatives links, which the template mounts and trusts as Gramine's does
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"  # Makefile's
    numpy = subprocess.run([python, "-c", "import numpy"], capture_output=True).returncode == 0
    assert ("[ Success 3/4 ]" in result.stdout) == numpy, result.stdout


@pytest.mark.skipif(shutil.which("busybox") is None, reason="Debian's busybox is needed")
def test_busybox_check(example, key):
    # Gramine 1.4–1.5's template: loader.entrypoint as a string, EPID's ra_client_* keys
    result = make(example("busybox"), "check", key)
    assert result.returncode == 0, result.stdout + result.stderr
    for n in range(1, 6):
        assert f"[ Success {n}/5 ]" in result.stdout


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None,
                    reason="gcc and make are needed")
def test_gcc_check(example, key):
    # make and gcc inside the enclave: access(X_OK) of trusted tools, exec of each (cc1, as,
    # collect2, ld) verified, the alternatives links (cc, which) through the mounted /etc.
    result = make(example("gcc"), "check", key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ Success ]" in result.stdout and "/usr/bin/cc" in result.stdout
