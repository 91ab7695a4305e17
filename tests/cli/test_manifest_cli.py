"""`pylos manifest` / `manifest-check` as a user runs them: real process, exit codes, files."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

TEMPLATE = """\
libos.entrypoint = "/app"
loader.log_level = "{{ log_level }}"
fs.mounts = [ { path = "/app", uri = "file:app" } ]
sgx.trusted_files = [ "file:app" ]
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "app").write_bytes(b"\x7fELF pretend")
    (tmp_path / "app.manifest.template").write_text(TEMPLATE)
    return tmp_path


def test_renders_to_file_and_stdout(workdir: Path, pylos):
    result = pylos("manifest", "-Dlog_level=debug", "app.manifest.template", "app.manifest",
                   cwd=workdir)
    assert result.returncode == 0, result.stderr
    data = tomllib.loads((workdir / "app.manifest").read_text())
    assert data["loader"]["log_level"] == "debug"
    assert data["sgx"]["trusted_files"][0]["uri"] == "file:app"
    assert len(data["sgx"]["trusted_files"][0]["sha256"]) == 64
    stdout = pylos("manifest", "--define", "log_level=debug", "app.manifest.template",
                   cwd=workdir)
    assert stdout.returncode == 0 and stdout.stdout == (workdir / "app.manifest").read_text()


def test_string_template_and_stdin(workdir: Path, pylos):
    result = pylos("manifest", "-c", TEMPLATE, "-D", "log_level=error", "out.manifest",
                   cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert 'log_level = "error"' in (workdir / "out.manifest").read_text()
    piped = pylos("manifest", "-Dlog_level=error", "-", cwd=workdir, input=TEMPLATE)
    assert piped.returncode == 0 and 'log_level = "error"' in piped.stdout


def test_no_check_skips_validation(workdir: Path, pylos):
    text = TEMPLATE + "sgx.thread_num = 4\n"
    assert pylos("manifest", "-Dlog_level=error", "-c", text, cwd=workdir).returncode == 1
    assert pylos("manifest", "--no-check", "-Dlog_level=error", "-c", text,
                 cwd=workdir).returncode == 0


@pytest.mark.parametrize(
    ("template", "defines", "message", "status"),
    [
        (TEMPLATE.replace('"file:app" ]', '"file:missing" ]'), ["-Dlog_level=error"],
         "bad.template:4: sgx.trusted_files[0]: Missing trusted file: 'missing' "
         "('file:missing'); fix: build or copy the file there", 1),
        (TEMPLATE + "loader.fancy = true\n", ["-Dlog_level=error"], "loader.fancy: unknown key",
         1),
        (TEMPLATE + "sgx.debug = = true\n", ["-Dlog_level=error"],
         "failed to parse manifest template: ", 1),
        (TEMPLATE, [], "'log_level' is undefined", 2),  # a -D missing: a usage error
    ],
    ids=["missing-trusted-file", "unknown-key", "toml-syntax", "undefined-variable"],
)
def test_bad_input_specific_message_no_output(workdir: Path, pylos, template, defines,
                                              message, status):
    (workdir / "bad.template").write_text(template)
    result = pylos("manifest", *defines, "bad.template", "bad.manifest", cwd=workdir)
    assert result.returncode == status
    assert message in result.stderr
    assert result.stderr.startswith("ERROR: ")
    assert "Traceback" not in result.stderr
    assert not (workdir / "bad.manifest").exists()
    assert [p.name for p in workdir.iterdir() if p.name.startswith(".bad")] == []


def test_toml_error_names_the_line(workdir: Path, pylos):
    (workdir / "bad.template").write_text("a = 1\nb = 2\nc = = 3\n")
    result = pylos("manifest", "bad.template", cwd=workdir)
    assert result.returncode == 1 and "line 3" in result.stderr


def test_missing_template_and_usage_errors(workdir: Path, pylos):
    missing = pylos("manifest", "nope.template", cwd=workdir)
    assert missing.returncode == 2 and "cannot read template 'nope.template'" in missing.stderr
    neither = pylos("manifest", cwd=workdir)
    assert neither.returncode == 2 and "give a template file or -c" in neither.stderr


def test_manifest_check(workdir: Path, pylos):
    assert pylos("manifest", "-Dlog_level=error", "app.manifest.template", "app.manifest",
                 cwd=workdir).returncode == 0
    ok = pylos("manifest-check", "app.manifest", cwd=workdir)
    assert ok.returncode == 0 and ok.stdout == "" and ok.stderr == ""
    (workdir / "bad.manifest").write_text((workdir / "app.manifest").read_text()
                                          + "\n[extra]\nx = 1\n")
    bad = pylos("manifest-check", "bad.manifest", cwd=workdir)
    assert bad.returncode == 1 and "extra: unknown key" in bad.stderr
    assert bad.stderr.startswith("ERROR: bad.manifest: ")
    gone = pylos("manifest-check", "gone.manifest", cwd=workdir)
    assert gone.returncode == 2


def test_hashing_prints_one_summary_line_when_not_a_terminal(workdir: Path, pylos):
    # The tests' stderr is a pipe: no progress bar, one line saying what was done.
    result = pylos("manifest", "-Dlog_level=error", "app.manifest.template", "app.manifest",
                   cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\[pylos\] hashing trusted files: 1 files, 12 B in \d+\.\d\d s\n",
                        result.stderr), result.stderr


def test_older_gramine_syntax_gets_the_migration(workdir: Path, pylos):
    old = """\
loader.entrypoint = "file:/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"
libos.entrypoint = "/app"
sgx.thread_num = 4
sgx.trusted_files.app = "file:app"
fs.mount.lib.type = "chroot"
fs.mount.lib.path = "/lib"
fs.mount.lib.uri = "file:/lib"
"""
    result = pylos("manifest", "-c", old, cwd=workdir)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "ERROR: <string>: this manifest uses older Gramine syntax that pylos (as Gramine ≥ 1.4) "
        "does not read:",
        '  loader.entrypoint = "file:/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so" is Gramine '
        '≤ 1.3 syntax; write loader.entrypoint = { uri = "file:{{ gramine.libos }}" } (or leave '
        "it out: pylos fills it in), and name the program in libos.entrypoint",
        '  sgx.trusted_files.NAME = "file:..." tables are Gramine ≤ 1.3 syntax; write an array: '
        'sgx.trusted_files = [ "file:app" ]',
        "  fs.mount.NAME.* tables are Gramine ≤ 1.3 syntax; write an array of mounts: fs.mounts "
        '= [ { type = "chroot", path = "/lib", uri = "file:/lib" } ]',
        "  sgx.thread_num is older Gramine's name; write sgx.max_threads = 4",
    ]


def test_libos_entrypoint_as_a_string_is_gramine_1_4_syntax(workdir: Path, pylos):
    # Gramine 1.4–1.6 templates: loader.entrypoint = "file:{{ gramine.libos }}", and the LibOS
    # in sgx.trusted_files; EPID's ra_client_* keys are accepted (and warned about at run time).
    template = """\
loader.entrypoint = "file:{{ gramine.libos }}"
libos.entrypoint = "/app"
sgx.ra_client_spid = ""
sgx.ra_client_linkable = false
sgx.trusted_files = [ "file:app", "file:{{ gramine.libos }}" ]
fs.mounts = [ { path = "/app", uri = "file:app" } ]
"""
    result = pylos("manifest", "-c", template, cwd=workdir)
    assert result.returncode == 0, result.stderr
    rendered = tomllib.loads(result.stdout)
    entrypoint = rendered["loader"]["entrypoint"]
    assert entrypoint["uri"] == "file:pylos-libos" and len(entrypoint["sha256"]) == 64
    libos = [e for e in rendered["sgx"]["trusted_files"] if e["uri"] == "file:pylos-libos"]
    assert libos == [{"uri": "file:pylos-libos", "sha256": entrypoint["sha256"]}]
