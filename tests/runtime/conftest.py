"""Fixtures for running real programs in enclaves: compiled test programs, enclave dirs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pylos.runtime.doctor import FOR_TESTS, missing_features

from runtime_support import PROGRAMS, SECRET, TEMPLATE, Enclave, shell_template


@pytest.fixture(scope="session", autouse=True)
def kernel_support() -> None:
    missing = missing_features(FOR_TESTS)
    if missing:
        pytest.fail("this kernel cannot run pylos enclaves: " + "; ".join(missing))


@pytest.fixture(scope="session")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every C program in programs/, compiled once per session."""
    out = tmp_path_factory.mktemp("programs")
    for source in PROGRAMS.glob("*.c"):
        subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o",
                        str(out / source.stem), str(source)], check=True)
    return out


@pytest.fixture
def make_enclave(tmp_path: Path, programs: Path):
    made: list[Path] = []

    def make(program: str, extra: str = "", log_level: str = "error") -> Enclave:
        root = tmp_path / f"enclave{len(made)}"
        made.append(root)
        (root / "data").mkdir(parents=True)
        shutil.copy(programs / program if "/" not in program else program, root / "app")
        (root / "trusted.txt").write_text("trusted content\n")
        (root / "plain.txt").write_text("plain content\n")
        (root / "data" / "ok.txt").write_text("allowed content\n")
        secret = tmp_path / "secret.txt"
        secret.write_text(SECRET + "\n")
        enclave = Enclave(root, secret)
        shell = program == "/bin/sh"
        enclave.render(extra, log_level, shell_template() if shell else TEMPLATE)
        return enclave

    return make

