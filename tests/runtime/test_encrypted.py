"""Encrypted mounts in `pylos run`: POSIX semantics for the program, Gramine protected files on
the host (no plaintext), path binding, keys, and key material never in logs."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from pylos.pf import PfError

from runtime_support import TEMPLATE, Enclave, shell_template
from support import PYLOS, read_protected

KEY_HEX = "000102030405060708090a0b0c0d0e0f"
KEY = bytes.fromhex(KEY_HEX)
TMPFS = '  { type = "tmpfs", path = "/tmp" },\n'


def with_mounts(template: str, mounts: str, keys: dict[str, str] | None = None) -> str:
    keys = {"default": KEY_HEX} if keys is None else keys
    text = template.replace(TMPFS, TMPFS + mounts)
    return text + "".join(f'fs.insecure__keys.{name} = "{value}"\n' for name, value in keys.items())


ENC_DIR = '  { type = "encrypted", path = "/enc", uri = "file:enc/" },\n'


@pytest.fixture
def encrypted(make_enclave):
    """An enclave (encfs or /bin/sh) with `enc/` mounted encrypted at /enc."""

    def make(program: str = "encfs", mounts: str = ENC_DIR, keys: dict[str, str] | None = None,
             log_level: str = "error", extra: str = "") -> Enclave:
        enclave = make_enclave(program)
        (enclave.root / "enc").mkdir(exist_ok=True)
        base = shell_template() if program == "/bin/sh" else TEMPLATE
        enclave.render(extra, log_level, with_mounts(base, mounts, keys))
        return enclave

    return make


def decrypt(path: Path, bound: str, key: bytes = KEY) -> bytes:
    return read_protected(path, bound, key)


def pf_encrypt(root: Path, source: Path, output: str) -> None:
    (root / "wrap.key").write_bytes(KEY)
    result = subprocess.run([PYLOS, "pf", "encrypt", "-w", "wrap.key", "-i", str(source), "-o",
                             output], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_posix_semantics_and_host_files_are_protected(encrypted):
    enclave = encrypted()
    result = enclave.run("posix", "/enc")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split("\n")[-2] == "ok large-file", result.stdout
    enc = enclave.root / "enc"
    assert sorted(os.listdir(enc)) == ["big", "f", "m", "r2"]  # no journal, no temporaries
    for name in os.listdir(enc):
        data = (enc / name).read_bytes()
        assert data.startswith(b"GRAFS_PF\x02\x00"), name
        assert len(data) % 4096 == 0
        for plain in (b"hello", b"mapped"):  # long enough not to occur by chance
            assert plain not in data
    assert decrypt(enc / "f", "enc/f") == b"ab"
    assert decrypt(enc / "r2", "enc/r2") == b"one"  # renamed: bound to its new path
    mapped = decrypt(enc / "m", "enc/m")  # MAP_SHARED writes reached the file
    assert len(mapped) == 8192 and mapped[4096:4102] == b"mapped"
    big = decrypt(enc / "big", "enc/big")
    assert len(big) == 3 << 20 and big[4096 * 5 + 3] == (4096 * 5 + 3) * 7 + 5 & 0xFF


def test_two_processes_append_to_one_file(encrypted):
    enclave = encrypted()
    result = enclave.run("concurrent", "/enc/shared", "3000")
    assert result.stdout == "ok concurrent 3000 3000\n", result.stdout + result.stderr
    data = decrypt(enclave.root / "enc" / "shared", "enc/shared")
    assert len(data) == 2 * 3000 * 16


def test_files_persist_across_runs_and_stat_needs_no_open(encrypted, tmp_path):
    enclave = encrypted()
    source = tmp_path / "plain.bin"
    source.write_bytes(b"x" * 10000)
    pf_encrypt(enclave.root, source, "enc/pre.bin")  # the path the mount's uri yields
    assert enclave.run("stat", "/enc/pre.bin").stdout == "10000\n"
    assert enclave.run("write", "/enc/new.txt", "persisted").returncode == 0
    assert enclave.run("stat", "/enc/new.txt").stdout == "9\n"
    assert enclave.run("cat", "/enc/new.txt").stdout == "persisted"
    assert enclave.run("cat", "/enc/pre.bin").stdout == "x" * 10000


def test_file_bound_to_another_path_is_refused(encrypted):
    enclave = encrypted()
    assert enclave.run("write", "/enc/a.txt", "content of a").returncode == 0
    os.rename(enclave.root / "enc" / "a.txt", enclave.root / "enc" / "b.txt")  # host swaps
    result = enclave.run("cat", "/enc/b.txt")
    assert result.stdout == "ERR:EACCES\n"
    assert "/enc/b.txt" in result.stderr and "path" in result.stderr


def test_tampered_file_is_refused(encrypted):
    enclave = encrypted()
    assert enclave.run("write", "/enc/t.txt", "y" * 20000).returncode == 0
    host = enclave.root / "enc" / "t.txt"
    data = bytearray(host.read_bytes())
    data[4096 * 2 + 100] ^= 1  # inside the first data node
    host.write_bytes(bytes(data))
    result = enclave.run("cat", "/enc/t.txt")
    assert "y" * 5000 not in result.stdout
    assert "MAC" in result.stderr or "node" in result.stderr, result.stderr


def test_missing_key_fails_on_first_access_with_its_name(encrypted):
    mount = '  { type = "encrypted", path = "/enc", uri = "file:enc/", key_name = "mine" },\n'
    enclave = encrypted(mounts=mount, keys={})
    result = enclave.run("write", "/enc/x", "data")
    assert result.stdout == "ERR:EACCES\n"
    assert "key 'mine' is not set" in result.stderr
    assert os.listdir(enclave.root / "enc") == []


def test_bad_insecure_key_is_a_clear_error(encrypted):
    enclave = encrypted(keys={"default": "0011"})
    result = enclave.run("stat", "/enc")
    assert result.returncode == 2
    assert "fs.insecure__keys.default: expected 32 hexadecimal digits" in result.stderr


def test_key_provisioned_through_dev_attestation(encrypted):
    mount = '  { type = "encrypted", path = "/enc", uri = "file:enc/", key_name = "prov" },\n'
    enclave = encrypted("/bin/sh", mounts=mount, keys={})
    octal = "".join(f"\\{b:03o}" for b in KEY)
    result = enclave.run("-c", f"printf '{octal}' > /dev/attestation/keys/prov && "
                               "echo secret > /enc/s && cat /enc/s && "
                               "cat /dev/attestation/keys/prov | wc -c && echo /dev/attestation/keys/*")
    assert result.stdout == "secret\n16\n/dev/attestation/keys/prov\n", result.stdout + result.stderr
    assert decrypt(enclave.root / "enc" / "s", "enc/s") == b"secret\n"
    bad = enclave.run("-c", "printf 'short' > /dev/attestation/keys/prov")
    assert bad.returncode != 0  # EINVAL: tests/runtime/test_attestation_dev.py checks errno
    assert "a key is exactly 16 bytes written at once (got 5 at offset 0); not set" in bad.stderr


def test_single_file_mount(encrypted):
    mount = '  { type = "encrypted", path = "/data/one.db", uri = "file:one.db" },\n'
    enclave = encrypted(mounts=mount)
    assert enclave.run("write", "/data/one.db", "single").returncode == 0
    assert enclave.run("cat", "/data/one.db").stdout == "single"
    assert decrypt(enclave.root / "one.db", "one.db") == b"single"


def test_no_key_material_in_logs_at_trace(encrypted):
    enclave = encrypted("/bin/sh", log_level="trace")
    octal = "".join(f"\\{b:03o}" for b in bytes(range(16, 32)))
    result = enclave.run("-c", f"echo hi > /enc/k && cat /enc/k && "
                               f"printf '{octal}' > /dev/attestation/keys/other")
    assert result.returncode == 0, result.stderr
    assert "[pylos] trace" in result.stderr
    for key in (KEY, bytes(range(16, 32))):
        for form in (key.hex(), key.hex().upper(), str(key), str(list(key))):
            assert form not in result.stderr


def test_normal_user_without_dev_fuse_gets_a_clear_error():
    """Where /dev/fuse is root-only (as on this CI machine), a normal user's encrypted mount
    fails with the reason and the fix; without encrypted mounts, only /dev/attestation goes.

    Run in a forked child that becomes the normal user (this machine's Python lives under
    /root, out of a normal user's reach, so `pylos run` itself cannot be started as one).
    """
    import pwd

    from pylos.errors import PylosError
    from pylos.runtime.fs import ATTESTATION_PATH, FuseMount, open_devices

    if os.geteuid() != 0 or os.stat("/dev/fuse").st_mode & 0o006:
        pytest.skip("needs root and a root-only /dev/fuse to act as a user without it")
    try:
        user = pwd.getpwnam("dev")
    except KeyError:
        user = pwd.getpwnam("nobody")
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        report = ""
        try:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            attestation = FuseMount(ATTESTATION_PATH, "attestation")
            fds, warnings = open_devices([attestation])
            report += f"fds={len(fds)} warning={warnings[0]}\n"
            open_devices([FuseMount("/enc", "encrypted"), attestation])
        except PylosError as exc:
            report += f"error={exc}\n"
        finally:
            os.write(writer, report.encode())
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        report = pipe.read()
    os.waitpid(child, 0)
    assert "fds=0 warning=/dev/attestation is not available (cannot open /dev/fuse: " \
        "Permission denied" in report
    assert "error=encrypted mounts need FUSE, and cannot open /dev/fuse: Permission denied " \
        "(it is mode 600; distributions ship it 0666: `chmod 0666 /dev/fuse` as root)" in report


def test_nested_encrypted_mounts_each_with_its_key(encrypted):
    # Gramine manifests often mount /tmp_enc and /tmp_enc/mrenclaves, each with its own key:
    # the inner mount point lies inside the outer FUSE file system, whose server must answer
    # before it can be mounted. Both start and serve; each file is under its own key.
    inner_key = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
    enclave = encrypted(mounts=ENC_DIR + '  { type = "encrypted", path = "/enc/inner", '
                        'uri = "file:enc/inner", key_name = "inner" },\n',
                        keys={"default": KEY_HEX, "inner": inner_key})
    result = enclave.run("write", "/enc/outer.txt", "outer", timeout=60)
    assert result.returncode == 0, result.stderr
    result = enclave.run("write", "/enc/inner/secret.txt", "inner", timeout=60)
    assert result.returncode == 0, result.stderr
    assert enclave.run("cat", "/enc/inner/secret.txt").stdout == "inner"
    enc = enclave.root / "enc"
    assert decrypt(enc / "outer.txt", "enc/outer.txt") == b"outer"
    inner = enc / "inner" / "secret.txt"
    assert decrypt(inner, "enc/inner/secret.txt", bytes.fromhex(inner_key)) == b"inner"
    with pytest.raises(PfError):
        decrypt(inner, "enc/inner/secret.txt")  # not under the outer key


def test_chmod_is_kept(encrypted):
    # A mode the program sets survives, in the run and in the next (0444 included: the FUSE
    # server still reads the file, as root of the enclave's user namespace).
    enclave = encrypted("fsops")
    result = enclave.run("write", "/enc/ro", "chmod", "/enc/ro", "444", "read", "/enc/ro")
    assert result.stdout == "write ok\nchmod ok\nread ok\n", result.stderr
    assert (enclave.root / "enc" / "ro").stat().st_mode & 0o7777 == 0o444
    assert enclave.run("read", "/enc/ro").stdout == "read ok\n"


def test_links_sockets_and_fifos(encrypted):
    # A file system, not just files: symbolic links, UNIX sockets bound there, FIFOs. Their
    # data never reaches the host (the kernel keeps sockets and pipes); a link's target is
    # plaintext on the host, as names are.
    enclave = encrypted("nodes")
    result = enclave.run("/enc", timeout=60)
    assert result.stdout == ("symlink ok -> target, read 'through the link'\n"
                             "socket read 4 'ping'\nfifo read 4 'pipe'\n"), result.stderr
    enc = enclave.root / "enc"
    assert os.readlink(enc / "link") == "target"
    assert stat.S_ISSOCK((enc / "sock").lstat().st_mode)
    assert stat.S_ISFIFO((enc / "fifo").lstat().st_mode)
    assert b"through the link" not in (enc / "target").read_bytes()


def test_rename_of_a_non_empty_directory(encrypted):
    # Each protected file is bound to its path: moving a directory rebinds every file below
    # it (one open, the other not), and the next run reads them under their new names.
    enclave = encrypted("fsops")
    result = enclave.run("mkdir", "/enc/d", "write", "/enc/d/f", "mkdir", "/enc/d/sub",
                         "write", "/enc/d/sub/g", "rename", "/enc/d", "/enc/e",
                         "read", "/enc/e/f", "read", "/enc/e/sub/g", "read", "/enc/d/f")
    assert result.stdout == ("mkdir ok\nwrite ok\nmkdir ok\nwrite ok\nrename ok\n"
                             "read ok\nread ok\nread ENOENT\n"), result.stderr
    enc = enclave.root / "enc"
    assert decrypt(enc / "e" / "sub" / "g", "enc/e/sub/g") == b"written\n"
    assert sorted(os.listdir(enc)) == ["e"]  # no journal left
    assert enclave.run("read", "/enc/e/sub/g").stdout == "read ok\n"


def test_directory_rename_interrupted_by_a_crash_is_finished(encrypted):
    import json

    enclave = encrypted("fsops", log_level="warning")
    result = enclave.run("mkdir", "/enc/d", "write", "/enc/d/f", "mkdir", "/enc/x",
                         "write", "/enc/x/h")
    assert result.returncode == 0, result.stderr
    enc = enclave.root / "enc"
    # The crash came after the directory's rename, before its files were rebound ...
    (enc / ".pylos-rename").write_text(json.dumps(["d", "e"]))
    (enc / "d").rename(enc / "e")
    result = enclave.run("read", "/enc/e/f", "read", "/enc/x/h")
    assert result.stdout == "read ok\nread ok\n", result.stderr
    assert "finishing the rename of '/enc/d' to '/enc/e' a crash interrupted" in result.stderr
    assert decrypt(enc / "e" / "f", "enc/e/f") == b"written\n"
    assert not (enc / ".pylos-rename").exists()
    # ... or before anything changed: nothing to finish
    (enc / ".pylos-rename").write_text(json.dumps(["x", "y"]))
    result = enclave.run("read", "/enc/x/h")
    assert result.stdout == "read ok\n" and "finishing" not in result.stderr
    assert sorted(os.listdir(enc)) == ["e", "x"]


def test_open_files_times_locks_and_truncation(encrypted):
    # Unlink and rename of open files, nanosecond times, flock between processes, truncate.
    enclave = encrypted()
    result = enclave.run("open-files", "/enc")
    assert result.stdout == "".join(f"ok {name}\n" for name in (
        "unlink-open", "rename-open", "utime-ns", "flock", "truncate")), \
        result.stdout + result.stderr
    enc = enclave.root / "enc"
    assert sorted(os.listdir(enc)) == ["lock", "o2", "t"]
    assert decrypt(enc / "o2", "enc/o2") == b"xy"  # written after its rename, bound to o2
    assert decrypt(enc / "t", "enc/t") == b"01234"
    assert (enc / "o2").stat().st_mtime_ns == 1500000000987654321


def test_sigterm_to_the_group_lets_the_program_save_its_state(encrypted):
    # `kill -TERM -<pylos run>` (how services and the benchmarks stop a server): with
    # sys.enable_sigterm_injection the program saves to its encrypted mount and exits. The
    # mount's server must still be there: redis refuses to exit when its final save fails.
    import signal

    enclave = encrypted("termsave", extra="sys.enable_sigterm_injection = true\n")
    process = subprocess.Popen([PYLOS, "run", "app", "/enc/state"], cwd=enclave.root,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        assert process.stdout.readline() == "ready\n"
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert decrypt(enclave.root / "enc" / "state", "enc/state") == b"final state\n"
