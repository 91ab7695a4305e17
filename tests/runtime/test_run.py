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


def test_signed_enclave_runs_with_insecure_banner(make_enclave, signing_key):
    enclave = make_enclave("hello")
    enclave.sign(signing_key)
    result = enclave.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, world\n"
    assert result.stderr.startswith("Gramine detected the following insecure configurations:")
    assert "  - loader.insecure__use_cmdline_argv = true\n" in result.stderr
    assert "  - sgx.allowed_files = [ ... ]\n" in result.stderr
    assert "must not be used in production!" in result.stderr


def test_exit_status_and_arguments(make_enclave):
    result = make_enclave("hello").run("7", "two words")
    assert result.returncode == 7
    assert "arg[2]=two words" in result.stdout


def test_edited_signed_manifest_is_refused(make_enclave, signing_key):
    enclave = make_enclave("hello")
    enclave.sign(signing_key)
    signed = enclave.root / "app.manifest.sgx"
    signed.write_text(signed.read_text().replace("max_threads = 8", "max_threads = 9"))
    result = enclave.run()
    assert result.returncode == 2
    assert "does not match the measurement" in result.stderr
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
