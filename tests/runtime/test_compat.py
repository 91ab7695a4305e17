"""Gramine behaviours kept where pylos differed (issue: Gramine's manifests unchanged)."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from pylos.runtime.syscalls.table import SYSCALLS

from runtime_support import TEMPLATE
from support import PYLOS


def test_hostname_is_localhost(make_enclave):
    # Gramine answers "localhost" unless sys.enable_extra_runtime_domain_names_conf is set.
    result = make_enclave("environment").run("hostname")
    assert result.stdout == "hostname localhost\n", result.stderr
    plain = make_enclave("environment",
                         extra="sys.enable_extra_runtime_domain_names_conf = true\n")
    assert plain.run("hostname").stdout == f"hostname {socket.gethostname()}\n"


def test_cpu_and_node_topology_in_sys(make_enclave):
    result = make_enclave("environment").run(
        "head", "/sys/devices/system/cpu/online", "head", "/sys/devices/system/cpu/possible",
        "head", "/sys/devices/system/node/online", "head", "/sys/kernel/uevent_helper")
    online = Path("/sys/devices/system/cpu/online").read_text()
    lines = result.stdout.splitlines(keepends=True)
    assert lines[0] == f"head {online}", result.stderr
    assert lines[1] == f"head {Path('/sys/devices/system/cpu/possible').read_text()}"
    assert lines[2].startswith("head ") and "ENOENT" not in lines[2]
    assert lines[3] == "head ENOENT\n"  # only the topology, not the rest of /sys


def test_open_files_limit_above_the_host_is_clamped(make_enclave):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    enclave = make_enclave("environment", extra=f"sys.fds.limit = {hard * 4}\n",
                           log_level="warning")
    result = enclave.run("nofile")
    assert result.returncode == 0, result.stderr
    granted = int(result.stdout.split()[1])
    assert result.stdout.endswith("raise ok\n") and hard <= granted <= hard * 4
    if granted == hard:
        assert (f"sys.fds.limit = {hard * 4} is above this host's limit of open files "
                f"({hard}): the program gets {hard}") in result.stderr


def test_manifest_limit_is_the_programs_to_reach(make_enclave):
    result = make_enclave("environment", extra="sys.fds.limit = 500\n").run("nofile")
    assert result.stdout == "nofile 500 raise ok\n", result.stderr


def test_read_only_open_with_create_makes_the_file(make_enclave):
    enclave = make_enclave("environment")
    result = enclave.run("create-rdonly", "/data/made.txt", "create-rdonly", "/tmp/made.txt")
    assert result.stdout == "create-rdonly ok\ncreate-rdonly ok\n", result.stderr
    assert (enclave.root / "data" / "made.txt").exists()


def test_trusted_file_made_later_does_not_stop_the_start(make_enclave):
    # Gramine checks a trusted file with its sha256 given when it is opened, not at load.
    enclave = make_enclave("environment")
    enclave.render(template=TEMPLATE.replace(
        '  "file:trusted.txt",\n',
        '  "file:trusted.txt",\n  { uri = "file:later.txt", sha256 = '
        '"c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2" },\n'))
    assert enclave.run("head", "/later.txt").stdout == "head ENOENT\n"
    (enclave.root / "later.txt").write_text("foobar")  # sha256("foobar")
    assert enclave.run("head", "/later.txt").stdout == "head foobar"  # no newline in it
    (enclave.root / "later.txt").write_text("tampered")
    result = enclave.run("head", "/later.txt")
    assert result.stdout == "head EPERM\n" or result.stdout == "head EACCES\n"


def test_missing_allowed_directory_is_made(make_enclave):
    enclave = make_enclave("fsops")
    enclave.render(template=TEMPLATE.replace(
        'sgx.allowed_files = [ "file:data/" ]', 'sgx.allowed_files = [ "file:data/", "file:logs/" ]'))
    assert not (enclave.root / "logs").exists()
    result = enclave.run("write", "/logs/run.log", "read", "/logs/run.log")
    assert result.stdout == "write ok\nread ok\n", result.stderr
    assert (enclave.root / "logs" / "run.log").exists()


def test_init_shows_no_host_paths(make_enclave):
    # PID 1 of the enclave is pylos's init: its command line named the host's interpreter,
    # virtual environment and launcher code.
    result = make_enclave("environment").run("head", "/proc/1/cmdline")
    assert result.stdout == "head pylos-init", result.stdout


def _unknown_library(root: Path) -> None:
    source = root / "unknown.c"
    source.write_text("int answer(void) { return 42; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(root / "unknown.so"), str(source)],
                   check=True)


def test_unknown_library_maps_under_allow_all_but_log(make_enclave):
    # Gramine's debugging policy lets unknown files be used, libraries included (logged).
    enclave = make_enclave("dlopen", extra='sgx.file_check_policy = "allow_all_but_log"\n',
                           log_level="warning")
    _unknown_library(enclave.root)
    result = enclave.run("/unknown.so")
    assert result.stdout == "answer 42\n", result.stdout + result.stderr
    assert "Allowing access to unknown file '/unknown.so' due to file_check_policy." \
        in result.stderr


def test_unknown_library_is_refused_under_strict(make_enclave):
    enclave = make_enclave("dlopen")
    _unknown_library(enclave.root)
    result = enclave.run("/unknown.so")
    assert result.returncode == 1 and result.stdout.startswith("dlopen failed"), result.stdout


def test_process_creation_can_be_mocked(make_enclave):
    # Gramine's sys.debug__mock_syscalls answers fork, vfork and clone without running them.
    fork, vfork, clone = SYSCALLS["fork"], SYSCALLS["vfork"], SYSCALLS["clone"]
    enclave = make_enclave("syscalls", extra=(
        'sys.debug__mock_syscalls = [ { name = "fork", return = -11 }, '
        '{ name = "vfork", return = -38 }, { name = "clone", return = 77 } ]\n'))
    assert enclave.run(str(fork)).stdout == f"syscall {fork} = -1 errno EAGAIN\n"
    assert enclave.run(str(vfork)).stdout == f"syscall {vfork} = -1 errno ENOSYS\n"
    assert enclave.run(str(clone)).stdout == f"syscall {clone} = 77 errno 0\n"


def test_device_passthrough_with_dev_uri(make_enclave):
    enclave = make_enclave("fsops", extra="")
    enclave.render(template=TEMPLATE.replace(
        '  { type = "tmpfs", path = "/tmp" },\n',
        '  { type = "tmpfs", path = "/tmp" },\n  { path = "/dev/passed", uri = "dev:/dev/full" },\n'
        '  { path = "/devices/zero", uri = "dev:/dev/zero" },\n'))
    before = os.stat("/dev/full")
    result = enclave.run("write", "/dev/passed", "read", "/dev/passed", "read", "/devices/zero",
                         "chmod", "/dev/passed", "600")
    # /dev/full: reads work, writes answer ENOSPC: the host's device itself
    assert result.stdout == "write No space left on device\nread ok\nread ok\nchmod EROFS\n", \
        result.stderr
    assert os.stat("/dev/full").st_mode == before.st_mode


def test_dev_uri_of_something_else_is_refused(make_enclave):
    enclave = make_enclave("fsops")
    enclave.render(template=TEMPLATE.replace(
        '  { type = "tmpfs", path = "/tmp" },\n',
        '  { type = "tmpfs", path = "/tmp" },\n  { path = "/dev/x", uri = "dev:/etc/passwd" },\n'))
    result = enclave.run("read", "/dev/x")
    assert result.returncode != 0 and result.stdout == ""
    assert "fs.mounts: 'dev:/etc/passwd' (at /dev/x) is not a character device" in result.stderr


def test_locks_hold_across_processes(make_enclave):
    result = make_enclave("environment").run("locks", "/data/lock", "locks", "/tmp/lock")
    assert result.stdout == "locks held off the other process\n" * 2, result.stderr


def test_environment_is_the_manifests_only(make_enclave):
    enclave = make_enclave("environment", extra='loader.env.GIVEN = "yes"\n')
    result = subprocess.run([PYLOS, "run", "app", "environ"], cwd=enclave.root,
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "LC_CTYPE": "C.UTF-8", "HOST_SECRET": "leak"})
    assert sorted(result.stdout.splitlines()) == [
        "environ GIVEN=yes", "environ LD_LIBRARY_PATH=/lib"], result.stderr


def test_mount_tables_name_no_host_paths(make_enclave):
    # The trapped view rewrites the tables the program opens.
    enclave = make_enclave("environment")
    result = enclave.run("cat", "/proc/self/mountinfo", "cat", "/proc/mounts",
                         env={**os.environ, "PYLOS_VERIFIED_VIEW": "0"})
    assert result.returncode == 0, result.stderr
    assert str(enclave.root) not in result.stdout  # the host directories behind the binds
    lines = result.stdout.splitlines()
    assert any(line.split()[4] == "/app" and line.split()[3] == "/" for line in lines)
    assert any(line.startswith("none /data ") for line in lines)  # /proc/mounts
    # The verified view's tables are the kernel's: its read-only mounts are named by the
    # view's file system ("/0"), only the allowed read-write binds by their host directory.
    result = enclave.run("cat", "/proc/self/mountinfo")
    assert result.returncode == 0, result.stderr
    leaking = [line.split()[4] for line in result.stdout.splitlines()
               if str(enclave.root) in line]
    assert leaking == ["/data"], result.stdout
    assert any(line.split()[4] == "/app" and " - fuse " in line
               for line in result.stdout.splitlines()), result.stdout


def test_proc_links_into_self_name_the_program(make_enclave):
    # /proc/mounts and /proc/net are procfs links into /proc/self: the program's.
    result = make_enclave("environment").run("head", "/proc/net/tcp", "head", "/proc/net/unix",
                                             "head", "/proc/mounts")
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["head", "sl", "local_address"], result.stdout
    assert lines[1].split()[:3] == ["head", "Num", "RefCount"], result.stdout
    assert lines[2].split()[1:3] in (["none", "/"], ["tmpfs", "/"]), result.stdout  # not the host's


def test_ids_other_than_the_programs_own(make_enclave):
    # Gramine: root may chown to any ids, switch to any uid/gid and set any groups. pylos
    # maps a range of ids when the host allows it (pylos run as root).
    if os.geteuid() != 0:
        pytest.skip("a range of ids needs pylos run as root (one id is mapped otherwise)")
    enclave = make_enclave("credentials")
    (enclave.root / "data" / "theirs.txt").write_text("theirs\n")
    (enclave.root / "data" / "moved.txt").write_text("moved\n")
    result = enclave.run(
        "chown", "/data/theirs.txt", "1000", "1000", "chown", "/data/moved.txt", "2000", "3000",
        "rename", "/data/moved.txt", "/data/renamed.txt", "setgroups", "10,20", "setgid", "1000",
        "setuid", "1000", "write", "/data/theirs.txt", "write", "/data/renamed.txt")
    assert result.stdout.splitlines() == [
        "chown ok 1000:1000", "chown ok 2000:3000", "rename ok", "setgroups ok 10 20",
        # Gramine checks the owner's permission bits only, whoever the program is now
        "setgid ok 1000/1000", "setuid ok 1000/1000", "write ok", "write ok"], result.stderr
    # on the host the ids are the enclave's own range, never host users' ids
    owner = (enclave.root / "data" / "theirs.txt").stat()
    assert owner.st_uid not in (0, 1000) and owner.st_uid == owner.st_gid
    renamed = (enclave.root / "data" / "renamed.txt").stat()
    assert (renamed.st_uid - owner.st_uid, renamed.st_gid - owner.st_gid) == (1000, 2000)


def test_gramine_errnos_of_mounts_and_scheduling(make_enclave):
    result = make_enclave("credentials").run("rmdir", "/lib", "rmdir", "/app", "affinity",
                                             "opath", "/", "opath", "/trusted.txt")
    assert result.stdout.splitlines() == [
        "rmdir EACCES", "rmdir ENOTDIR", "affinity ok 1", "opath ok", "opath ok"], result.stderr


def test_alternatives_link_out_of_the_mount_resolves_by_the_host_path(make_enclave):
    # Debian's alternatives: libs/libanswer.so -> <host>/alternatives/libanswer.so ->
    # libs/impl/libanswer.so. The middle link is not in the view; Gramine follows the chain
    # by the host path because the file it ends at is trusted.
    enclave = make_enclave("dlopen")
    libs = enclave.root / "libs"
    (libs / "impl").mkdir(parents=True)
    _unknown_library(enclave.root)
    (enclave.root / "unknown.so").rename(libs / "impl" / "libanswer.so")
    (enclave.root / "alternatives").mkdir()
    (enclave.root / "alternatives" / "libanswer.so").symlink_to(libs / "impl" / "libanswer.so")
    (libs / "libanswer.so").symlink_to(enclave.root / "alternatives" / "libanswer.so")
    (libs / "libuntrusted.so").symlink_to(enclave.root / "alternatives" / "libanswer.so")
    mounts = '  { path = "/libs", uri = "file:libs" },\n  { type = "tmpfs", path = "/tmp" },\n'
    template = TEMPLATE.replace('  { type = "tmpfs", path = "/tmp" },\n', mounts)
    enclave.render(template=template.replace(
        '  "file:trusted.txt",\n', '  "file:trusted.txt",\n  "file:libs/impl/libanswer.so",\n'))
    assert enclave.run("/libs/libanswer.so").stdout == "answer 42\n"
    # a link whose chain ends at a file trusted under another name is no way around the list
    (libs / "impl" / "libanswer.so").rename(libs / "impl" / "moved.so")
    (enclave.root / "alternatives" / "libanswer.so").unlink()
    (enclave.root / "alternatives" / "libanswer.so").symlink_to(enclave.root / "plain.txt")
    result = enclave.run("/libs/libuntrusted.so")
    assert result.returncode == 1 and result.stdout.startswith("dlopen failed"), result.stdout


def test_mount_point_that_is_a_host_symlink(make_enclave):
    # usrmerge: the host's /lib is a link to usr/lib; Gramine's manifests mount file:/lib.
    if not os.path.islink("/lib"):
        pytest.skip("this host's /lib is no symlink (no usrmerge)")
    libc = Path(os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6"))
    enclave = make_enclave("environment")
    template = (TEMPLATE.replace('{ path = "/lib", uri = "file:{{ gramine.runtimedir() }}" }',
                                 '{ path = "/lib", uri = "file:/lib" },\n'
                                 '  { path = "/lib64", uri = "file:/lib64" }')
                .replace('"file:{{ gramine.runtimedir() }}/"',
                         '"file:/lib/x86_64-linux-gnu/libc.so.6", "file:/lib64/ld-linux-x86-64.so.2"')
                .replace('LD_LIBRARY_PATH = "/lib"', 'LD_LIBRARY_PATH = "/lib/x86_64-linux-gnu"'))
    enclave.render(template=template)
    result = enclave.run("head", "/lib/x86_64-linux-gnu/libc.so.6", "head", "/usr/lib/x")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("head \x7fELF") and libc.exists()
    assert result.stdout.endswith("head ENOENT\n")  # /usr is not in the view


def test_heap_limit_of_the_manifest(make_enclave):
    # Gramine's sys.brk.max_size (Occlum's process.default_heap_size): brk stops there.
    limited = make_enclave("heap", extra='sys.brk.max_size = "1M"\n', log_level="warning")
    result = limited.run()
    assert result.stdout.splitlines() == ["sbrk ENOMEM after 1024 KiB", "malloc ok"], \
        result.stdout + result.stderr
    assert "the heap reached sys.brk.max_size (1048576 bytes)" in result.stderr
    assert make_enclave("heap").run().stdout == "sbrk grew 65536 KiB\nmalloc ok\n"


def test_access_x_ok_of_trusted_executables(make_enclave):
    # Host binds are noexec (exec runs verified copies), yet access(X_OK) must say what an
    # exec would do: gcc looks for cc1 that way, `which` and make too.
    enclave = make_enclave("credentials")
    (enclave.root / "plain.txt").chmod(0o755)  # executable, but not trusted
    (enclave.root / "data" / "ok.txt").chmod(0o755)  # allowed: never runs
    result = enclave.run("access", "/app", "x", "access", "/app", "rx", "access", "/app", "wx",
                         "access", "/trusted.txt", "x", "access", "/plain.txt", "x",
                         "access", "/data/ok.txt", "x", "access", "/lib/libc.so.6", "rx",
                         "access", "/lib", "x", "access", "/missing", "x")
    assert result.stdout.splitlines() == [
        "access /app x ok", "access /app rx ok", "access /app wx EROFS",
        "access /trusted.txt x EACCES", "access /plain.txt x EACCES",
        "access /data/ok.txt x EACCES", "access /lib/libc.so.6 rx ok", "access /lib x ok",
        "access /missing x ENOENT"], result.stdout + result.stderr


def test_execveat_of_a_trusted_descriptor(make_enclave):
    # execveat(fd, "", AT_EMPTY_PATH) of a trusted file opened read-only: the descriptor is
    # the sealed verified copy, which runs; an untrusted file's descriptor does not.
    enclave = make_enclave("credentials")
    shutil.copy(enclave.root / "app", enclave.root / "tool")  # trusted, never run by path
    shutil.copy(enclave.root / "app", enclave.root / "data" / "copy")
    enclave.render(template=TEMPLATE.replace('  "file:app",\n', '  "file:app",\n  "file:tool",\n'))
    result = enclave.run("execveat", "/tool", "opath", "/")
    assert result.stdout == "opath ok\n", result.stdout + result.stderr
    result = enclave.run("execveat", "/data/copy", "opath", "/")
    assert result.stdout == "execveat EACCES\n", result.stdout + result.stderr
