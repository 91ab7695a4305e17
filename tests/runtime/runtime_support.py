"""Helpers of the runtime tests (a uniquely named module: a bare `from conftest import` can
pick another directory's conftest in a full run)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from support import run_pylos

PROGRAMS = Path(__file__).parent / "programs"

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

    def run(self, *args: str, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        from support import PYLOS

        return subprocess.run([PYLOS, "run", "app", *args], cwd=self.root, capture_output=True,
                              text=True, timeout=timeout, env=env)


# coreutils the shell tests use: they need nothing beyond glibc (the runtime directory)
SHELL_TOOLS = ("cat", "wc", "sort", "sleep", "true", "head", "echo", "rm", "cp")


def shell_template() -> str:
    """TEMPLATE with the host's /bin mounted and a few coreutils trusted."""
    mounts = '  { path = "/bin", uri = "file:/bin" },\n  { type = "tmpfs", path = "/tmp" },'
    trusted = "".join(f'  "file:/bin/{tool}",\n' for tool in SHELL_TOOLS)
    return (TEMPLATE.replace('  { type = "tmpfs", path = "/tmp" },', mounts)
            .replace('  "file:app",\n', '  "file:app",\n' + trusted)
            + 'loader.env.PATH = "/bin"\n')
