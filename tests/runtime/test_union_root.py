"""fs.root.type = "union" (Occlum's unionfs root): the image below, changes in enclave memory
above; a file copied up from the image is verified first, whichever call copies it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support import run_pylos

TEMPLATE = """\
libos.entrypoint = "/bin/app"
loader.log_level = "error"
loader.insecure__use_cmdline_argv = true
loader.env.LD_LIBRARY_PATH = "/lib"
fs.root = { type = "union", uri = "file:image" }
fs.mounts = [ { path = "/lib", uri = "file:{{ gramine.runtimedir() }}" } ]
sgx.trusted_files = [ "file:image/", "file:{{ gramine.runtimedir() }}/" ]
"""


@pytest.fixture
def union(tmp_path: Path, programs: Path) -> Path:
    root = tmp_path / "union"
    (root / "image" / "bin").mkdir(parents=True)
    (root / "image" / "etc").mkdir()
    shutil.copy(programs / "fsops", root / "image" / "bin" / "app")
    for name in ("a.conf", "b.conf", "c.conf", "d.conf"):
        (root / "image" / "etc" / name).write_text("trusted\n")
    (root / "app.manifest.template").write_text(TEMPLATE)
    result = run_pylos("manifest", "app.manifest.template", "app.manifest", cwd=root)
    assert result.returncode == 0, result.stderr
    return root


def run(root: Path, *args: str):
    return run_pylos("run", "app", *args, cwd=root)


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in (root / "image").rglob("*") if p.is_file()}


def test_changes_anywhere_never_reach_the_image(union: Path):
    before = snapshot(union)
    result = run(union, "write", "/etc/new", "read", "/etc/new", "write", "/etc/a.conf",
                 "rename", "/etc/b.conf", "/moved", "read", "/moved", "unlink", "/etc/c.conf",
                 "read", "/etc/c.conf", "mkdir", "/opt", "write", "/opt/f", "chmod", "/etc/d.conf",
                 "600", "touch", "/etc/d.conf")
    assert result.stdout.splitlines() == [
        "write ok", "read ok", "write ok", "rename ok", "read ok", "unlink ok", "read ENOENT",
        "mkdir ok", "write ok", "chmod ok", "touch ok"], result.stderr
    assert snapshot(union) == before and not (union / "image" / "opt").exists()
    assert run(union, "read", "/etc/new", "read", "/etc/b.conf").stdout == (
        "read ENOENT\nread ok\n")  # a new run starts from the image


def test_a_tampered_image_file_is_never_copied_up(union: Path):
    for name in ("a.conf", "b.conf", "c.conf", "d.conf"):
        (union / "image" / "etc" / name).write_text("host-tampered\n")
    result = run(union, "read", "/etc/a.conf", "write", "/etc/a.conf", "rename", "/etc/b.conf",
                 "/b", "chmod", "/etc/c.conf", "600", "touch", "/etc/d.conf",
                 "read", "/etc/a.conf")
    lines = result.stdout.splitlines()
    assert lines[:5] == ["read EPERM", "write EPERM", "rename EPERM", "chmod EPERM",
                         "touch EPERM"], result.stdout + result.stderr
    assert lines[5] == "read ok"  # what was copied up was emptied: no host byte in it
    assert result.stderr.count("Hash of trusted file") >= 5



def test_copy_up_racing_a_host_that_swaps_the_bytes(union: Path):
    # While the host keeps rewriting image files, the program appends to each (a copy-up):
    # each either gets the verified bytes plus its own (16 bytes), or EPERM and an emptied
    # copy (0 bytes); the host's bytes (16, plus 8 appended) never reach it.
    import threading
    import time

    etc = union / "image" / "etc"
    names = [f"r{i}.conf" for i in range(150)]
    for name in names:
        (etc / name).write_text("trusted\n")
    template = (union / "app.manifest.template").read_text()
    assert run_pylos("manifest", "-c", template, "app.manifest", cwd=union).returncode == 0
    args = [arg for name in names for arg in ("write", f"/etc/{name}", "size", f"/etc/{name}")]
    seen: dict[tuple[str, str], int] = {}
    for _ in range(3):  # until the race was run both ways (it is, nearly always, at once)
        stop = threading.Event()

        def swap(stop: threading.Event = stop) -> None:
            while not stop.is_set():
                for content in ("host-tampered!!\n", "trusted\n"):
                    for name in names:
                        (etc / name).write_text(content)
                    time.sleep(0.002)

        swapper = threading.Thread(target=swap)
        swapper.start()
        try:
            result = run(union, *args)
        finally:
            stop.set()
            swapper.join()
        lines = result.stdout.splitlines()
        assert len(lines) == 2 * len(names), result.stderr
        for outcome in zip(lines[::2], lines[1::2], strict=True):
            assert outcome in {("write ok", "size 16"), ("write EPERM", "size 0")}, outcome
            seen[outcome] = seen.get(outcome, 0) + 1
        if len(seen) == 2:
            break
    assert len(seen) == 2, seen
