"""`pylos run` basics: signed and development mode, argv, exit status, refusals."""

from __future__ import annotations

import signal
import time

from support import run_pylos


def test_development_mode_runs_and_says_so(make_enclave):
    enclave = make_enclave("hello", log_level="warning")
    result = enclave.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, world\n"
    assert "development mode" in result.stderr


def test_signed_enclave_runs_with_insecure_banner(make_enclave, key):
    enclave = make_enclave("hello")
    enclave.sign(key)
    result = enclave.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, world\n"
    assert result.stderr.startswith("[pylos] this enclave has insecure settings (fine for "
                                    "development, never for production):\n")
    assert result.stderr.count("insecure settings") == 1
    assert "  - loader.insecure__use_cmdline_argv = true\n" in result.stderr
    assert "  - sgx.allowed_files = [ ... ]\n" in result.stderr
    assert "sgx.debug" not in result.stderr  # not in this manifest


def test_unsigned_run_says_so_at_the_default_log_level(make_enclave):
    result = make_enclave("hello").run()
    assert result.returncode == 0
    assert result.stderr == ("[pylos] notice: running app.manifest unsigned (no .manifest.sgx: "
                             "development mode, as gramine-direct; no measurement, so no SGX "
                             "reports, quotes or sealing keys)\n")


def test_sgx_option_refuses_an_unsigned_enclave(make_enclave):
    enclave = make_enclave("hello")
    result = run_pylos("run", "--sgx", "app", cwd=enclave.root)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("ERROR: --sgx: app.manifest.sgx does not exist; sign the manifest "
                             "with `pylos sign -m app.manifest`\n")


def test_direct_option_runs_the_unsigned_manifest(make_enclave, key):
    enclave = make_enclave("hello")
    enclave.sign(key)
    assert run_pylos("run", "--sgx", "app", cwd=enclave.root).stdout == "Hello, world\n"
    result = run_pylos("run", "--direct", "app", "3", cwd=enclave.root)
    assert result.returncode == 3 and result.stdout.startswith("Hello, world\n")
    assert "running app.manifest unsigned (--direct: development mode" in result.stderr


def test_stale_signed_manifest_is_an_error_with_the_fix(make_enclave, key):
    enclave = make_enclave("hello")
    enclave.sign(key)
    enclave.render(extra='loader.env.EDITED = "1"\n')  # edited and re-rendered, not re-signed
    result = enclave.run()
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("ERROR: app.manifest.sgx is older than app.manifest (the manifest "
                             "changed after signing): re-sign it with `pylos sign -m "
                             "app.manifest`\n")


def test_log_level_and_trace_options(make_enclave, tmp_path):
    enclave = make_enclave("hello")
    result = run_pylos("run", "--log-level", "warning", "app", cwd=enclave.root)
    assert "[pylos] warning: enclave memory limit" in result.stderr
    trace = tmp_path / "trace.log"
    result = run_pylos("run", f"--trace={trace}", "app", cwd=enclave.root)
    assert result.returncode == 0 and result.stdout == "Hello, world\n"
    logged = trace.read_text()
    assert 'openat("/lib/libc.so.6", O_RDONLY|O_CLOEXEC) = fd: trusted, verified' in logged
    assert 'execve("/app") = verified, continue' in logged


def test_trace_and_debug_say_what_was_decided(make_enclave):
    enclave = make_enclave("fsops")
    result = run_pylos("run", "--trace", "app", "read", "/plain.txt", "write", "/data/new",
                       cwd=enclave.root)
    assert result.stdout == "read EACCES\nwrite ok\n", result.stderr
    assert ('openat("/plain.txt", O_RDONLY) = -EACCES: refused (Disallowing access to file '
            "'/plain.txt'; file is not allowed.)") in result.stderr
    assert 'openat("/data/new", O_WRONLY|O_CREAT|O_APPEND) = fd: allowed' in result.stderr
    result = run_pylos("run", "--log-level", "debug", "app", "read", "/trusted.txt",
                       cwd=enclave.root)
    assert "[pylos] debug: view: /app is " in result.stderr
    assert f"[pylos] debug: view: /data is {enclave.root}/data (read-write: allowed)" in (
        result.stderr)
    assert f"[pylos] debug: trusted file '{enclave.root}/trusted.txt' verified (16 bytes" in (
        result.stderr)
    for argv, message in ((["--log-level", "loud", "app"], "--log-level 'loud': expected one "
                           "of none, error, warning, debug, trace, all"),
                          (["--sgx", "--direct", "app"], "--sgx and --direct exclude each other"),
                          (["--frobnicate", "app"], "unknown option '--frobnicate'"),
                          (["--sgx"], "missing APP")):
        result = run_pylos("run", *argv, cwd=enclave.root)
        assert result.returncode == 2 and message in result.stderr, (argv, result.stderr)


def test_exit_status_and_arguments(make_enclave):
    result = make_enclave("hello").run("7", "two words")
    assert result.returncode == 7
    assert "arg[2]=two words" in result.stdout


def test_edited_signed_manifest_is_refused(make_enclave, key):
    enclave = make_enclave("hello")
    enclave.sign(key)
    signed = enclave.root / "app.manifest.sgx"
    signed.write_text(signed.read_text().replace("max_threads = 8", "max_threads = 9"))
    result = enclave.run()
    assert result.returncode == 2
    assert "does not match the measurement" in result.stderr
    assert "rebuild both with `pylos sign -m" in result.stderr
    assert "Hello" not in result.stdout


def test_missing_sig_and_missing_app(make_enclave, tmp_path):
    enclave = make_enclave("hello")
    (enclave.root / "app.manifest.sgx").write_text("")
    result = enclave.run()
    assert result.returncode == 2 and "app.sig does not exist" in result.stderr
    nothing = run_pylos("run", "nothing", cwd=tmp_path)
    assert nothing.returncode == 2
    assert "Invalid application path specified (nothing.manifest.sgx does not exist" in (
        nothing.stderr)


def test_argv_rules(make_enclave):
    template_argv = 'loader.argv = ["app", "9", "fixed"]\n'
    enclave = make_enclave("hello")
    enclave.render(extra="", log_level="error")
    text = (enclave.root / "app.manifest.template").read_text()
    enclave.render(template=text.replace("loader.insecure__use_cmdline_argv = true\n",
                                         template_argv))
    result = enclave.run("ignored")
    assert result.returncode == 9 and "arg[2]=fixed" in result.stdout
    assert "Discarding cmdline arguments (ignored)" in result.stderr
    enclave.render(template=text.replace("loader.insecure__use_cmdline_argv = true\n", ""))
    assert enclave.run().returncode == 0
    refused = enclave.run("extra")
    assert refused.returncode == 2
    assert "argv handling wasn't configured in the manifest" in refused.stderr
    enclave.render(template=text.replace("loader.insecure__use_cmdline_argv = true\n",
                                         "loader.insecure__use_cmdline_argv = true\n"
                                         + template_argv))
    both = enclave.run()
    assert both.returncode == 2 and "mutually exclusive" in both.stderr


def test_argv_src_file(make_enclave):
    enclave = make_enclave("hello")
    serialized = run_pylos("argv-serializer", "app", "5", "from file").stdout
    (enclave.root / "argv").write_text(serialized)
    text = (enclave.root / "app.manifest.template").read_text()
    enclave.render(template=text.replace("loader.insecure__use_cmdline_argv = true\n",
                                         'loader.argv_src_file = "file:argv"\n'))
    result = enclave.run()
    assert result.returncode == 5 and "arg[2]=from file" in result.stdout


def test_environment_is_clean_unless_asked(make_enclave, monkeypatch):
    enclave = make_enclave("/bin/sh", extra='loader.env.KEEP = { passthrough = true }\n'
                           'loader.env.FIXED = "v"\n')
    monkeypatch.setenv("KEEP", "kept")
    monkeypatch.setenv("LEAKY", "leaked")
    result = enclave.run("-c", "echo KEEP=$KEEP FIXED=$FIXED LEAKY=$LEAKY")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "KEEP=kept FIXED=v LEAKY="


def test_killed_by_signal_reported_like_a_shell(make_enclave):
    enclave = make_enclave("/bin/sh")
    result = enclave.run("-c", "kill -SEGV $$")
    assert result.returncode == 128 + signal.SIGSEGV


def test_descendants_killed_when_main_exits(make_enclave):
    enclave = make_enclave("/bin/sh")
    start = time.monotonic()
    result = enclave.run("-c", "sleep 30 & echo started")
    assert result.returncode == 0 and "started" in result.stdout
    assert time.monotonic() - start < 10, "a leftover child kept the enclave alive"


# Modules `pylos run` must not import on a warm start (caches filled): each costs every start
# milliseconds (docs/performance.md, "start-up"), and none is needed to run a program.
NOT_ON_THE_RUN_PATH = ("typing", "pathlib", "socket", "threading", "tomllib", "tempfile",
                       "dataclasses", "inspect", "cryptography", "jinja2", "click", "rich")


def test_a_warm_signed_run_imports_nothing_it_does_not_need(make_enclave, key, tmp_path):
    import os
    import subprocess
    import sys
    import sysconfig

    import pylos

    enclave = make_enclave("hello")
    enclave.sign(key)
    assert enclave.run().returncode == 0  # fills the parse, measurement and signature caches
    listing = tmp_path / "modules.txt"
    # As the command's own wrapper does (`python3 -IS`, its prefix and path), recording what
    # the launcher process has imported when the run is over.
    code = (f"import sys; sys.prefix = sys.exec_prefix = {sys.prefix!r}\n"
            f"sys.path[:0] = [{os.path.dirname(os.path.dirname(pylos.__file__))!r}, "
            f"{sysconfig.get_paths()['purelib']!r}]; sys.argv = ['pylos', 'run', 'app']\n"
            "import pylos.cli.main as cli\n"
            "def exit_now(status):\n"
            f"    open({str(listing)!r}, 'w').write('\\n'.join(sorted(sys.modules)))\n"
            "    cli.os._exit(status)\n"
            "cli.exit_now = exit_now\n"
            "cli.main()\n")
    result = subprocess.run([sys.executable, "-IS", "-c", code], cwd=enclave.root,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "Hello, world\n", result.stderr
    imported = set(listing.read_text().split())
    assert "pylos.runtime.launcher" in imported
    assert not [m for m in imported if m.split(".")[0] in NOT_ON_THE_RUN_PATH], result.stderr
