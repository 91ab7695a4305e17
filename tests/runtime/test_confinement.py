"""The second wall and the doors of the start: Landlock around the program in namespace
mode, standard descriptors that would lead to the host, and start-up state the host can
rewrite (runtime/landlock.py, runtime/launcher.py, runtime/load.py)."""

from __future__ import annotations

import hashlib
import marshal
import os
import subprocess

import pytest

from pylos.runtime import landlock

from support import PYLOS

needs_landlock = pytest.mark.skipif(landlock.abi() == 0, reason="needs Landlock")


@needs_landlock
def test_landlock_refuses_what_the_mounts_would_allow(make_enclave):
    # The view's /dev is a writable tmpfs (device nodes are bound into it); only Landlock
    # keeps the program from making entries there. /tmp (tmpfs) and /data (allowed) stay open.
    enclave = make_enclave("fsops")
    result = enclave.run("mkdir", "/dev/planted", "mkdir", "/tmp/made", "mkdir", "/data/made",
                         "write", "/dev/shm/ok")
    assert result.stdout == "mkdir EACCES\nmkdir ok\nmkdir ok\nwrite ok\n", result.stderr
    assert (enclave.root / "data" / "made").is_dir()


def test_directory_as_standard_input_becomes_dev_null(make_enclave):
    enclave = make_enclave("fsops", log_level="warning")
    directory = os.open(enclave.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = subprocess.run([PYLOS, "run", "app", "read", "/proc/self/fd/0"],
                                cwd=enclave.root, stdin=directory, capture_output=True,
                                text=True, timeout=120)
    finally:
        os.close(directory)
    # /dev/null reads nothing, successfully; a directory would have failed with EISDIR.
    assert result.stdout == "read ok\n", result.stderr
    assert "standard input (fd 0) is a directory: replaced by /dev/null" in result.stderr


def test_path_handle_as_standard_output_becomes_dev_null(make_enclave):
    enclave = make_enclave("fsops", log_level="warning")
    handle = os.open(enclave.root / "data" / "ok.txt", os.O_PATH)
    try:
        result = subprocess.run([PYLOS, "run", "app", "read", "/data/ok.txt"],
                                cwd=enclave.root, stdout=handle, stderr=subprocess.PIPE,
                                text=True, timeout=120)
    finally:
        os.close(handle)
    assert result.returncode == 0, result.stderr
    assert "standard output (fd 1) is an O_PATH handle: replaced by /dev/null" in result.stderr


def test_forged_parse_cache_is_not_believed(make_enclave, isolated_cache):
    # The parsed manifest is cached in a directory the host can write. A forged entry that
    # turns the file check off must be detected (its MAC), and the manifest parsed itself.
    enclave = make_enclave("fsops")
    assert enclave.run("read", "/plain.txt").stdout == "read EACCES\n"
    digest = hashlib.sha256((enclave.root / "app.manifest").read_bytes()).hexdigest()
    entry = isolated_cache / "manifests" / f"{digest}.marshal"
    blob = entry.read_bytes()
    data = marshal.loads(blob[32:])
    data["sgx"]["file_check_policy"] = "allow_all_but_log"
    forged = marshal.dumps(data)
    for mac in (blob[:32], hashlib.sha256(forged).digest()):
        entry.write_bytes(mac + forged)
        result = enclave.run("read", "/plain.txt")
        assert result.stdout == "read EACCES\n", result.stderr


def test_device_nodes_keep_their_host_metadata(make_enclave):
    # /dev/null in the view is the host's own inode (bound): as root, a chmod inside would be
    # a chmod of the host's /dev/null. The binds are read-only; the devices still work.
    before = os.stat("/dev/null")
    result = make_enclave("fsops").run("chmod", "/dev/null", "600", "write", "/dev/null",
                                       "chmod", "/dev/shm", "700")
    assert result.stdout == "chmod EROFS\nwrite ok\nchmod ok\n", result.stderr
    after = os.stat("/dev/null")
    assert (after.st_mode, after.st_uid, after.st_gid) == (
        before.st_mode, before.st_uid, before.st_gid)
