"""Fixtures for running real programs in enclaves: compiled test programs, enclave dirs."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pylos.runtime.doctor import missing_features

from support import run_pylos

PROGRAMS = Path(__file__).parent / "programs"


@pytest.fixture(scope="session", autouse=True)
def kernel_support() -> None:
    missing = missing_features()
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


TEMPLATE = """\
libos.entrypoint = "/app"
loader.log_level = "{{ log_level }}"
loader.env.LD_LIBRARY_PATH = "/lib"
loader.insecure__use_cmdline_argv = true
fs.mounts = [
  { path = "/lib", uri = "file:{{ gramine.runtimedir() }}" },
  { path = "/app", uri = "file:app" },
  { type = "tmpfs", path = "/tmp" },
]
sgx.max_threads = 8
sgx.trusted_files = [
  "file:app",
  "file:trusted.txt",
  "file:{{ gramine.runtimedir() }}/",
]
sgx.allowed_files = [ "file:data/" ]
"""

SECRET = "TOPSECRET-host-file"


@dataclass
class Enclave:
    """An application directory: `app` (trusted), `trusted.txt`, `plain.txt` (not listed),
    `data/` (allowed); a host secret lives next to it, outside the enclave's view."""

    root: Path
    secret: Path

    def render(self, extra: str = "", log_level: str = "error", template: str = TEMPLATE) -> None:
        (self.root / "app.manifest.template").write_text(template + extra)
        result = run_pylos("manifest", f"-Dlog_level={log_level}", "app.manifest.template",
                           "app.manifest", cwd=self.root)
        assert result.returncode == 0, result.stderr

    def sign(self, key: Path) -> None:
        result = run_pylos("sign", "-m", "app.manifest", "-k", str(key), "-q", cwd=self.root)
        assert result.returncode == 0, result.stderr

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        from support import PYLOS

        return subprocess.run([PYLOS, "run", "app", *args], cwd=self.root, capture_output=True,
                              text=True, timeout=timeout)


# coreutils the shell tests use: they need nothing beyond glibc (the runtime directory)
SHELL_TOOLS = ("cat", "wc", "sort", "sleep", "true", "head", "echo", "rm", "cp")


def shell_template() -> str:
    """TEMPLATE with the host's /bin mounted and a few coreutils trusted."""
    mounts = '  { path = "/bin", uri = "file:/bin" },\n  { type = "tmpfs", path = "/tmp" },'
    trusted = "".join(f'  "file:/bin/{tool}",\n' for tool in SHELL_TOOLS)
    return (TEMPLATE.replace('  { type = "tmpfs", path = "/tmp" },', mounts)
            .replace('  "file:app",\n', '  "file:app",\n' + trusted)
            + 'loader.env.PATH = "/bin"\n')


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


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "enclave-key.pem"
    assert run_pylos("gen-key", str(path)).returncode == 0
    return path
