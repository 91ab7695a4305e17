"""examples/sqlite (Gramine's sqlite example on an encrypted /db/), as a user runs it: three
separate enclave runs, output diffed; the database on disk is a protected file."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from support import EXAMPLES, PYLOS

KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100")


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="Debian's sqlite3 is needed")
def test_sqlite_example_check(tmp_path: Path, key: Path):
    example = tmp_path / "sqlite"
    shutil.copytree(EXAMPLES / "sqlite", example, ignore=shutil.ignore_patterns(
        "*.manifest", "*.manifest.sgx", "*.sig", "OUTPUT*", "db"))
    env = {**os.environ, "PATH": f"{Path(PYLOS).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["make", "SGX=1", f"SGX_SIGNER_KEY={key}", "check"],
                            cwd=example, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ Success 1/2 ]" in result.stdout and "[ Success 2/2 ]" in result.stdout
    assert os.listdir(example / "db") == ["test.db"]  # the rollback journal is gone
    # The host's view: decrypt with the manifest's key and the bound path, read the rows.
    (tmp_path / "key.bin").write_bytes(KEY)
    decrypted = tmp_path / "plain.db"
    out = subprocess.run([PYLOS, "pf", "decrypt", "-V", "-w", str(tmp_path / "key.bin"), "-i",
                          "db/test.db", "-o", str(decrypted)], cwd=example, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with sqlite3.connect(decrypted) as db:
        names = [row[0] for row in db.execute("SELECT name FROM staff ORDER BY id")]
    assert names == ["Alice Confidential", "Carol Classified", "Dave Undisclosed"]
