"""`pylos python init`: a real venv, a real import trace, the manifest rendered, signed and run.

numpy comes from the package index (`pip install numpy` into a fresh venv, once per module;
CI reaches an index, as `scripts/setup` does). Not Debian's python3-numpy: its BLAS is found
through /etc/alternatives, which Gramine's python template (examples/python) does not mount,
so installing it would turn that example's numpy check from skipped into failed (where it
is installed anyway, one test uses it). The pure-Python package `greet` is a wheel built
here, installed with `pip --no-index`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from support import run_pylos

GREET = {
    "greet/__init__.py": 'def hello(name):\n    return f"hello, {name}"\n',
    "greet/unused.py": "SECRET = 'never imported'\n",
}

# Imports numpy and greet; where a file named `probe` lies next to it (created only after the
# manifest was made), it also imports a module the native run never imported.
APP = """\
import os

import greet
import numpy

a = numpy.arange(10, dtype=float)
print(greet.hello("numpy"), a.dot(a))
if os.path.exists(os.path.join(os.path.dirname(__file__), "probe")):
    import greet.unused
"""

GREET_APP = """\
import greet

print(greet.hello("enclave"))
"""


def build_wheel(out: Path, name: str = "greet", version: str = "1.0") -> Path:
    """A pure-Python wheel of GREET with its RECORD (what a build backend would write)."""
    dist_info = f"{name}-{version}.dist-info"
    files = {path: text.encode() for path, text in GREET.items()}
    files[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\n"
                                      f"Version: {version}\n").encode()
    files[f"{dist_info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: pylos-tests\n"
                                   b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"])
                                    + "\n").encode()
    wheel = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def make_venv(path: Path, *requirements: str) -> Path:
    """A venv on the base interpreter of the tests' own; `requirements` installed by pip."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    if requirements:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install",
             "-q", "--disable-pip-version-check", *requirements],
            capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"pip install {requirements} failed:\n{result.stderr}"
    return path


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


@pytest.fixture(scope="module")
def numpy_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("numpy-venv")
    return make_venv(root / "venv", "numpy", str(build_wheel(root)))


@pytest.fixture
def greet_venv(tmp_path: Path) -> Path:
    """A small venv of its own, for the tests that tamper with it."""
    return make_venv(tmp_path / "venv", "--no-index", str(build_wheel(tmp_path)))


def init(app: Path, venv: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_pylos("python", "init", str(app), "--venv", str(venv), *extra, cwd=app.parent)


def build(app: Path, venv: Path, key: Path) -> Path:
    """init, manifest, sign: the app's enclave, ready for `pylos run`."""
    result = init(app, venv)
    assert result.returncode == 0, result.stderr
    base = app.with_suffix("")
    for args in (("manifest", f"{base}.manifest.template", f"{base}.manifest"),
                 ("sign", "-k", str(key), "-m", f"{base}.manifest")):
        result = run_pylos(*args, cwd=app.parent)
        assert result.returncode == 0, result.stderr
    return base


def run(base: Path, *options: str) -> subprocess.CompletedProcess:
    return run_pylos("run", *options, base.name, cwd=base.parent)


def trusted_paths(base: Path) -> set[str]:
    manifest = tomllib.loads(Path(f"{base}.manifest").read_text())
    return {entry["uri"].removeprefix("file:") for entry in manifest["sgx"]["trusted_files"]}


def test_numpy_app_runs_with_exactly_what_it_imported(tmp_path, numpy_venv, key):
    app = tmp_path / "app.py"
    app.write_text(APP)
    native = subprocess.run([str(numpy_venv / "bin" / "python"), str(app)],
                            capture_output=True, text=True, check=True).stdout
    base = build(app, numpy_venv, key)
    result = run(base)
    assert result.returncode == 0, result.stderr
    assert result.stdout == native == "hello, numpy 285.0\n"
    assert "Disallowing" not in result.stderr

    trusted = trusted_paths(base)
    site = site_packages(numpy_venv)
    assert str(site / "greet" / "__init__.py") in trusted
    assert str(site / "greet" / "__pycache__" / f"__init__.{sys.implementation.cache_tag}.pyc"
               ) in trusted
    assert str(site / "greet" / "unused.py") not in trusted
    assert os.path.realpath(numpy_venv / "bin" / "python") in trusted
    assert str(numpy_venv / "pyvenv.cfg") in trusted
    numpy_files = {p for p in trusted if p.startswith(f"{site}/numpy")}
    extension = {p for p in numpy_files if ".so" in os.path.basename(p)}
    assert numpy_files and extension
    # Exactly what was imported: far less than the distribution's files (tests, f2py, ...).
    record = (next(site.glob("numpy-*.dist-info")) / "RECORD").read_text().splitlines()
    assert len(numpy_files) < len(record) / 2
    assert not any("/tests/" in p for p in numpy_files)
    template = Path(f"{base}.manifest.template").read_text()
    assert "# Distribution numpy" in template and "# Distribution greet 1.0" in template


def test_module_not_imported_natively_is_refused(tmp_path, numpy_venv, key):
    app = tmp_path / "app.py"
    app.write_text(APP)
    base = build(app, numpy_venv, key)
    (tmp_path / "probe").touch()  # now the app imports greet.unused too
    result = run(base)
    unused = site_packages(numpy_venv) / "greet" / "unused.py"
    assert result.returncode == 1
    assert result.stdout == "hello, numpy 285.0\n"
    assert f"Disallowing access to file '{unused}'; file is not allowed." in result.stderr
    assert "PermissionError" in result.stderr


def test_tampered_module_is_refused(tmp_path, greet_venv, key):
    app = tmp_path / "app.py"
    app.write_text(GREET_APP)
    base = build(app, greet_venv, key)
    assert run(base).stdout == "hello, enclave\n"
    module = site_packages(greet_venv) / "greet" / "__init__.py"
    module.write_text('def hello(name):\n    return "tampered"\n')
    # Natively the tampered source wins (its .pyc is stale now); inside it is refused.
    native = subprocess.run([str(greet_venv / "bin" / "python"), str(app)],
                            capture_output=True, text=True).stdout
    assert native == "tampered\n"
    result = run(base)
    assert result.returncode == 1
    assert "tampered" not in result.stdout
    assert f"Hash of trusted file '{module}' does not match" in result.stderr


def test_trusted_pyc_is_used_and_a_tampered_one_is_refused(tmp_path, greet_venv, key):
    app = tmp_path / "app.py"
    app.write_text(GREET_APP)
    base = build(app, greet_venv, key)
    package = site_packages(greet_venv) / "greet"
    pyc = package / "__pycache__" / f"__init__.{sys.implementation.cache_tag}.pyc"
    result = run(base, "--log-level", "debug")
    assert result.stdout == "hello, enclave\n"
    # The precompiled .pyc is what ran: verified. (Its source is verified too when the view
    # is the verified view, which hashes at lookup: Python stat()s it to check the .pyc.)
    assert f"trusted file '{pyc}' verified" in result.stderr

    data = bytearray(pyc.read_bytes())
    data[-2] ^= 0xFF  # the header (source mtime and size) still matches: Python would use it
    stat = pyc.stat()
    pyc.write_bytes(bytes(data))
    os.utime(pyc, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = run(base)
    # Refused when opened; Python falls back to the trusted source, which is intact.
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello, enclave\n"
    assert f"Hash of trusted file '{pyc}' does not match" in result.stderr


def test_package_linked_from_outside_the_venv(tmp_path, greet_venv, key):
    """A package directory that is a symbolic link to elsewhere (an editable checkout, a
    Debian /etc/alternatives chain): its target is mounted too, so the link resolves."""
    package = site_packages(greet_venv) / "greet"
    elsewhere = tmp_path / "checkout" / "greet"
    elsewhere.parent.mkdir()
    shutil.move(package, elsewhere)
    package.symlink_to(elsewhere)
    app = tmp_path / "app" / "app.py"
    app.parent.mkdir()
    app.write_text(GREET_APP)
    base = build(app, greet_venv, key)
    result = run(base)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello, enclave\n"
    assert str(elsewhere / "__init__.py") in trusted_paths(base)


DEBIAN_PYTHON = "/usr/bin/python3"


def debian_numpy() -> bool:
    return os.path.exists(DEBIAN_PYTHON) and subprocess.run(
        [DEBIAN_PYTHON, "-c", "import numpy; assert numpy.__file__.startswith('/usr/lib/')"],
        capture_output=True).returncode == 0


@pytest.mark.skipif(not debian_numpy(), reason="Debian's python3-numpy is not installed")
def test_debian_numpy_through_etc_alternatives(tmp_path, key):
    """Debian's numpy links libblas.so.3 -> /etc/alternatives/... -> blas/libblas.so.3: the
    hops resolve in the enclave, the system site-packages of a --system-site-packages venv
    are traced like the venv's own."""
    venv = tmp_path / "venv"
    subprocess.run([DEBIAN_PYTHON, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True)
    app = tmp_path / "app" / "app.py"
    app.parent.mkdir()
    app.write_text("import numpy\n\nprint(numpy.arange(4.0).dot(numpy.arange(4.0)))\n")
    base = build(app, venv, key)
    result = run(base)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "14.0\n"
    template = Path(f"{base}.manifest.template").read_text()
    assert '{ path = "/etc/alternatives", uri = "file:/etc/alternatives" }' in template


def test_app_arguments_go_to_the_native_run_and_the_manifest(tmp_path, greet_venv, key):
    app = tmp_path / "app.py"
    app.write_text("import sys\n\nprint(sys.argv[1:])\n")
    result = init(app, greet_venv, "--", "one", "two words")
    assert result.returncode == 0, result.stderr
    template = (tmp_path / "app.manifest.template").read_text()
    assert f'loader.argv = ["{greet_venv}/bin/python", "{app}", "one", "two words"]' in template


@pytest.mark.parametrize(("source", "status", "message"), [
    (None, 2, "app.py: no such file"),
    ("x = (\n", 1, "app.py: SyntaxError: '(' was never closed"),
    ("raise SystemExit(4)\n", 1, "app.py failed when run natively with"),
    ("import no_such_module\n", 1, "ModuleNotFoundError: No module named 'no_such_module'"),
])
def test_bad_app_is_a_clear_error(tmp_path, greet_venv, source, status, message):
    app = tmp_path / "app.py"
    if source is not None:
        app.write_text(source)
    result = init(app, greet_venv)
    assert result.returncode == status, result.stderr
    assert result.stderr.startswith("ERROR: ") and message in result.stderr
    assert "_pylos_trace" not in result.stderr and "pylos/" not in result.stderr
    assert not (tmp_path / "app.manifest.template").exists()


def test_not_a_venv_is_a_clear_error(tmp_path):
    app = tmp_path / "app.py"
    app.write_text("print(1)\n")
    result = init(app, tmp_path)
    assert result.returncode == 1
    assert result.stderr == (f"ERROR: --venv {tmp_path}: not a virtual environment (no "
                             f"pyvenv.cfg); create one with: python3 -m venv {tmp_path}\n")
    result = init(app, tmp_path / "missing")
    assert result.returncode == 2
    assert result.stderr == f"ERROR: --venv {tmp_path / 'missing'}: no such directory\n"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    result = subprocess.run([str(Path(sys.executable).with_name("pylos")), "python", "init",
                             str(app)], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "no virtual environment: give --venv PATH" in result.stderr
