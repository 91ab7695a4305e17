from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

from pylos import install
from pylos.errors import PylosError
from pylos.manifest import Manifest, parse_defines, render


def test_defines_split_at_first_equals_and_bare_names_are_true():
    assert parse_defines(["a=1", "b=x=y", "c", "d="]) == {"a": "1", "b": "x=y", "c": True,
                                                        "d": ""}
    with pytest.raises(PylosError, match="missing variable name"):
        parse_defines(["=v"])


def test_undefined_variable_is_named_with_its_line():
    with pytest.raises(PylosError) as info:
        render('a = 1\nb = "{{ entrypoint }}"\n', {}, "app.manifest.template")
    assert "app.manifest.template:2" in str(info.value)
    assert "'entrypoint' is undefined" in str(info.value)


def test_template_syntax_error_is_reported():
    with pytest.raises(PylosError, match=r"app.t:1: template syntax error"):
        render("{% for %}", {}, "app.t")


def test_trailing_newline_kept_and_no_autoescape():
    assert render('x = "{{ v }}"\n', {"v": "<&>"}) == 'x = "<&>"\n'


def test_runtimedir_forms_agree_and_hold_the_glibc_runtime():
    rendered = render("{{ gramine.runtimedir() }}|{{ gramine.runtimedir }}|"
                      "{{ gramine.runtimedir / 'libc.so.6' }}|{{ gramine.runtimedir('glibc') }}", {})
    a, b, c, d = rendered.split("|")
    assert a == b == d == str(install.runtimedir())
    assert c == f"{a}/libc.so.6"
    names = set(os.listdir(a))
    assert {"ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libpthread.so.0",
            "libdl.so.2", "librt.so.1", "libresolv.so.2", "libnss_files.so.2"} <= names
    # Copies of the host's files, not links: a host upgrade cannot change a signed enclave.
    assert not any(os.path.islink(os.path.join(a, n)) for n in names)
    total = sum(os.path.getsize(os.path.join(a, n)) for n in names)
    assert total < 16 << 20, "the runtime dir should hold a few MB, not all of /lib"


def test_runtimedir_is_per_installation_not_per_user_or_cwd(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    before = render("{{ gramine.runtimedir() }}", {})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert render("{{ gramine.runtimedir() }}", {}) == before
    assert before.startswith(sys.prefix)


def test_runtimedir_override_populates_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PYLOS_PKGLIBDIR", str(tmp_path / "pkg"))
    path = Path(render("{{ gramine.runtimedir() }}", {}))
    assert path == tmp_path / "pkg" / "runtime" / "glibc"
    assert (path / "libc.so.6").read_bytes() == Path(install._host_glibc_dir(), "libc.so.6").read_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["glibc"]  # no staging dir left behind
    with pytest.raises(PylosError, match="supports only 'glibc'"):
        render("{{ gramine.runtimedir('musl') }}", {})


def test_python_globals_describe_the_base_interpreter():
    out = render("{{ python.stdlib }}|{{ python.purelib }}|{{ python.distlib }}|"
                 "{{ python.ext_suffix }}|{{ python.implementation.name }}|"
                 "{{ python.get_config_var('VERSION') }}|{{ python.get_path('stdlib') }}", {})
    stdlib, purelib, distlib, ext, impl, version, stdlib2 = out.split("|")
    assert stdlib == stdlib2 == sysconfig.get_paths(vars={"installed_base": sys.base_prefix,
                                                          "base": sys.base_prefix})["stdlib"]
    assert not purelib.startswith(sys.prefix) or sys.prefix == sys.base_prefix
    assert distlib.endswith("python3/dist-packages")
    assert ext == sysconfig.get_config_var("EXT_SUFFIX")
    assert impl == "cpython" and version == sysconfig.get_config_var("VERSION")


def test_get_sys_path_runs_the_interpreter():
    interpreter = shutil.which("python3") or sys.executable
    out = render("{% for p in python.get_sys_path(interp) %}{{ p }}\n{% endfor %}",
                 {"interp": interpreter})
    paths = out.split()
    assert paths and all(os.path.exists(p) for p in paths)
    with pytest.raises(PylosError, match="get_sys_path"):
        render("{{ python.get_sys_path('/nonexistent/python') | list }}", {})


def test_env_and_ldd():
    os.environ["PYLOS_TEST_VALUE"] = "42"
    try:
        assert render("{{ env.get('PYLOS_TEST_VALUE', '0') }}|{{ env.get('NOPE_X', '0') }}",
                      {}) == "42|0"
    finally:
        del os.environ["PYLOS_TEST_VALUE"]
    libs = render("{{ ldd('/bin/sh') | join(' ') }}", {}).split()
    assert any(lib.endswith("/libc.so.6") for lib in libs)
    assert libs == sorted(libs) and all(lib.startswith("/") for lib in libs)
    assert not any("vdso" in lib for lib in libs)


def test_manifest_from_template_reports_toml_errors_with_line():
    with pytest.raises(PylosError, match=r"failed to parse manifest template: .*line 2"):
        Manifest.from_template('a = 1\nb = [1,,]\n', {}, "x.template")
