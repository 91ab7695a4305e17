"""File policy in the enclave: trusted, allowed, unlisted, tmpfs; tampering; read-only."""

from __future__ import annotations

import os
import threading
import time

from runtime_support import SECRET


def test_trusted_allowed_and_unlisted_files(make_enclave):
    enclave = make_enclave("escape")
    trusted = enclave.run("open", "/trusted.txt")
    assert trusted.stdout == "READ:trusted content\n\n"
    allowed = enclave.run("open", "/data/ok.txt")
    assert allowed.stdout == "READ:allowed content\n\n"
    unlisted = enclave.run("open", "/plain.txt")
    assert unlisted.stdout == "ERR:EACCES\n"
    assert "Disallowing access to file '/plain.txt'; file is not allowed." in unlisted.stderr


def test_allow_all_but_log(make_enclave):
    enclave = make_enclave("escape", extra='sgx.file_check_policy = "allow_all_but_log"\n',
                           log_level="warning")
    result = enclave.run("open", "/plain.txt")
    assert result.stdout == "READ:plain content\n\n"
    assert "Allowing access to unknown file '/plain.txt' due to file_check_policy." in (
        result.stderr)


def test_allowed_file_written_and_read_back(make_enclave):
    enclave = make_enclave("/bin/sh")
    result = enclave.run("-c", "echo written > /data/new.txt && cat /data/new.txt")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "written\n"
    assert (enclave.root / "data" / "new.txt").read_text() == "written\n"


def test_trusted_files_are_read_only(make_enclave):
    enclave = make_enclave("escape")
    result = enclave.run("write", "/trusted.txt")
    assert result.stdout == "ERR:EACCES\n"
    assert "Disallowing write/append to a trusted file '/trusted.txt'" in result.stderr
    assert (enclave.root / "trusted.txt").read_text() == "trusted content\n"
    created = make_enclave("/bin/sh").run("-c", "echo x > /newfile")
    assert created.returncode != 0
    assert "Disallowing creating file '/newfile'" in created.stderr


def test_tmpfs_is_private_and_empty(make_enclave):
    enclave = make_enclave("/bin/sh")
    first = enclave.run("-c", "ls -A /tmp | wc -l; echo hi > /tmp/f; cat /tmp/f")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "0\nhi\n"
    assert enclave.run("-c", "ls -A /tmp | wc -l").stdout == "0\n"


def test_tampered_trusted_library_is_refused(make_enclave, tmp_path, programs):
    import shutil
    import subprocess

    from support import run_pylos

    enclave = make_enclave("hello")
    lib = enclave.root / "libs"
    lib.mkdir()
    (tmp_path / "greet.c").write_text('#include <stdio.h>\nvoid greet(void){puts("greet");}\n')
    (tmp_path / "main.c").write_text("void greet(void);\nint main(void){greet();return 0;}\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib / "libgreet.so"),
                    str(tmp_path / "greet.c")], check=True)
    subprocess.run(["cc", "-o", str(enclave.root / "app"), str(tmp_path / "main.c"),
                    f"-L{lib}", "-lgreet"], check=True)
    text = (enclave.root / "app.manifest.template").read_text()
    text = text.replace('loader.env.LD_LIBRARY_PATH = "/lib"',
                        'loader.env.LD_LIBRARY_PATH = "/lib:/libs"')
    text = text.replace('  { type = "tmpfs", path = "/tmp" },',
                        '  { type = "tmpfs", path = "/tmp" },\n  { path = "/libs", uri = "file:libs" },')
    text = text.replace('  "file:trusted.txt",', '  "file:trusted.txt",\n  "file:libs/",')
    enclave.render(template=text)
    assert enclave.run().stdout == "greet\n"
    data = bytearray((lib / "libgreet.so").read_bytes())
    data[data.index(b"greet\0")] = ord("G")  # same size, different bytes
    (lib / "libgreet.so").write_bytes(bytes(data))
    result = enclave.run()
    assert result.returncode != 0 and "greet" not in result.stdout
    assert "Hash of trusted file" in result.stderr and "libgreet.so" in result.stderr
    assert "does not match with the reference hash in manifest" in result.stderr
    del shutil, run_pylos, programs


def _modify_when(path, flag, content, done):
    deadline = time.monotonic() + 60
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    path.write_text(content)
    os.utime(flag.parent)
    (flag.parent / "go").write_text("go")
    done.set()


def _trusted_file_changed_midway(make_enclave, env=None):
    """The host rewrites trusted.txt once the program has read it (and holds it open)."""
    enclave = make_enclave("/bin/sh")
    trusted = enclave.root / "trusted.txt"
    done = threading.Event()
    worker = threading.Thread(target=_modify_when, args=(
        trusted, enclave.root / "data" / "ready", "TAMPERED content\n", done))
    worker.start()
    script = ("exec 3</trusted.txt; cat /trusted.txt; : > /data/ready; "
              "while [ ! -e /data/go ]; do sleep 0.05; done; "
              "cat <&3; echo ---; cat /trusted.txt; echo rc=$?")
    result = enclave.run("-c", script, env=env)
    worker.join()
    return result


def test_trusted_file_modified_after_first_use_is_never_served(make_enclave):
    result = _trusted_file_changed_midway(make_enclave)
    assert "TAMPERED" not in result.stdout
    # The verified view keeps serving the verified bytes, to old and new opens alike.
    assert result.stdout == ("trusted content\ntrusted content\n---\ntrusted content\n"
                             "rc=0\n"), result.stderr


def test_trusted_file_modified_after_first_use_fails_new_opens_when_trapped(make_enclave):
    # The trapped view (PYLOS_VERIFIED_VIEW=0, identity mode) re-checks at each open.
    result = _trusted_file_changed_midway(make_enclave,
                                          {**os.environ, "PYLOS_VERIFIED_VIEW": "0"})
    assert "TAMPERED" not in result.stdout
    assert result.stdout.startswith("trusted content\ntrusted content\n---\n")
    assert "rc=1" in result.stdout
    assert "Hash of trusted file" in result.stderr


def test_trusted_executable_modified_after_first_use(make_enclave, programs):
    enclave = make_enclave("/bin/sh")
    tool = enclave.root / "tool"
    tool.write_bytes((programs / "hello").read_bytes())
    tool.chmod(0o755)
    text = (enclave.root / "app.manifest.template").read_text()
    enclave.render(template=text.replace('  "file:app",', '  "file:app",\n  "file:tool",'))
    done = threading.Event()
    worker = threading.Thread(target=_modify_when, args=(
        tool, enclave.root / "data" / "ready", "#!/bin/sh\necho EVIL\n", done))
    worker.start()
    script = ("/tool; : > /data/ready; while [ ! -e /data/go ]; do :; done; /tool; "
              "echo rc=$?")
    result = enclave.run("-c", script)
    worker.join()
    # The first exec staged the verified copy; the second runs it, never the new bytes.
    assert result.stdout == "Hello, world\nHello, world\nrc=0\n"


def test_secret_stays_unreadable_by_name(make_enclave):
    enclave = make_enclave("escape")
    result = enclave.run("open", str(enclave.secret))
    assert SECRET not in result.stdout
