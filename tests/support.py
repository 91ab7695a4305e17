"""Paths and helpers shared by the tests (importable as `support`: tests/ is on sys.path)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
TESTDATA = SHARED / "testdata"
SPECS = SHARED / "specs"
EXAMPLES = PROJECT_ROOT / "examples"
PYLOS = str(Path(sys.executable).with_name("pylos"))


def gramine_template(name: str) -> str:
    """A Gramine CI-Examples template, verbatim from the manifest spec (§9), read in place."""
    text = (SPECS / "gramine-manifest.md").read_text()
    match = re.search(rf"### `{re.escape(name)}`\n+```toml\n(.*?)```", text, re.S)
    if match is None:
        raise LookupError(f"template {name} not found in {SPECS / 'gramine-manifest.md'}")
    return match.group(1)


def run_pylos(*args: str, cwd: Path | None = None, env: dict | None = None,
              input: str | None = None) -> subprocess.CompletedProcess:
    """Run the installed `pylos` command as a user would."""
    return subprocess.run([PYLOS, *args], cwd=cwd, capture_output=True, text=True, input=input,
                          env={**os.environ, **(env or {})}, timeout=120)
