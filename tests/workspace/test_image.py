"""`pylos build --image-key`: the image stored as Gramine protected files, decrypted and
verified by the supervisor at each open and exec."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pylos.workspace.workspace import build_workspace

from support import PYLOS, run_pylos


@pytest.fixture
def image_key(workspace: Path) -> Path:
    path = workspace.parent / "image.key"
    result = run_pylos("gen-image-key", str(path))
    assert result.returncode == 0, result.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    return path


@pytest.fixture
def encrypted(workspace: Path, key: Path, image_key: Path) -> Path:
    build_workspace(workspace, key, image_key=image_key)
    return workspace


def stored_bytes(ws: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((ws / "build").rglob("*"))
                    if p.is_file() and not p.is_symlink() and "pylos" not in p.parts)


def test_encrypted_image_holds_no_plaintext(encrypted: Path, image_key: Path):
    stored = stored_bytes(encrypted)
    image = encrypted / "image"
    files = [p for p in image.rglob("*") if p.is_file() and not p.is_symlink()]
    assert files
    for path in files:
        data = path.read_bytes()
        for start in (0, len(data) // 2):
            window = data[start:start + 32]
            if len(window) == 32:
                assert window not in stored, path
    assert b"\x7fELF" not in stored and b"Hello World" not in stored
    assert b"localhost" not in stored
    key = bytes.fromhex(image_key.read_text().strip().replace("-", ""))
    assert key not in stored and key.hex().encode() not in stored  # the key is sealed
    assert (encrypted / "build/image_config.json").read_text().strip() == (
        '{"image_type": "encrypted"}')


def test_encrypted_image_runs(encrypted: Path):
    result = run_pylos("run", "/bin/wsprog", "argv", "x", cwd=encrypted)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("argv[0]=wsprog\nargv[1]=argv\nargv[2]=x\n")
    assert run_pylos("run", "/bin/wsprog", "cat", "/etc/hosts", cwd=encrypted
                     ).stdout == "127.0.0.1 localhost\n"
    assert run_pylos("start", cwd=encrypted).returncode == 0
    try:
        exec_result = subprocess.run([PYLOS, "exec", "/bin/wsprog", "exit", "9", "e"],
                                     cwd=encrypted, capture_output=True, text=True, timeout=60)
        assert (exec_result.returncode, exec_result.stdout) == (9, "tag e\n")
    finally:
        assert run_pylos("stop", cwd=encrypted).returncode == 0


def test_modified_encrypted_file_is_refused(encrypted: Path):
    stored = encrypted / "build/image/bin/wsprog"
    data = bytearray(stored.read_bytes())
    data[5000] ^= 1
    stored.write_bytes(bytes(data))
    result = run_pylos("run", "/bin/wsprog", cwd=encrypted)
    assert result.returncode != 0 and result.stdout == ""
    assert "cannot be decrypted" in result.stderr


def test_swapped_encrypted_files_are_refused(encrypted: Path):
    """Each file is bound to its path: another (validly encrypted) file put in its place is
    refused."""
    hosts = encrypted / "build/image/etc/hosts"
    hosts.write_bytes((encrypted / "build/image/etc/localtime").read_bytes())
    result = run_pylos("run", "/bin/wsprog", "cat", "/etc/hosts", cwd=encrypted)
    assert result.returncode == 3 and result.stdout == ""


def test_unchanged_files_are_not_reencrypted_and_plain_build_cleans_up(
        encrypted: Path, key: Path, image_key: Path):
    stored = encrypted / "build/image/bin/wsprog"
    before = stored.stat().st_mtime_ns
    (encrypted / "image/etc/new.conf").write_text("x")
    messages: list[str] = []
    build_workspace(encrypted, key, image_key=image_key, log=messages.append)
    assert stored.stat().st_mtime_ns == before
    assert any("1 of" in m for m in messages), messages
    other = encrypted.parent / "other.key"
    assert run_pylos("gen-image-key", str(other)).returncode == 0
    build_workspace(encrypted, key, image_key=other)  # a new key re-encrypts everything
    assert stored.stat().st_mtime_ns != before
    assert run_pylos("run", "/bin/wsprog", cwd=encrypted).stdout == "Hello World\n"
    build_workspace(encrypted, key)
    assert not (encrypted / "build/image").exists()
    assert not (encrypted / "build/image_key.sealed").exists()
    assert run_pylos("run", "/bin/wsprog", cwd=encrypted).stdout == "Hello World\n"


def test_bad_image_key(workspace: Path):
    bad = workspace.parent / "bad.key"
    bad.write_text("not-a-key\n")
    result = run_pylos("build", "--image-key", str(bad), cwd=workspace)
    assert result.returncode == 2 and "16 hex bytes joined by '-'" in result.stderr
