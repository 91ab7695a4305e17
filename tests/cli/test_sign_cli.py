"""`pylos gen-key`, `pylos sign`, `pylos sigstruct-view` end to end, as a Makefile runs them."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pylos.sgx.sigstruct import Sigstruct

from support import EXAMPLES, PYLOS, run_pylos

TEMPLATE = """\
libos.entrypoint = "/app"
loader.log_level = "{{ log_level }}"
fs.mounts = [ { path = "/app", uri = "file:app" }, { path = "/lib", uri = "file:lib" } ]
sgx.debug = true
sgx.trusted_files = [ "file:app", "file:lib/" ]
"""


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "enclave-key.pem"
    result = run_pylos("gen-key", str(path))
    assert result.returncode == 0, result.stderr
    return path


def make_app(directory: Path, app: bytes = b"app v1") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app").write_bytes(app)
    (directory / "lib").mkdir(exist_ok=True)
    (directory / "lib" / "libx.so").write_bytes(b"lib")
    (directory / "app.manifest.template").write_text(TEMPLATE)
    return directory


def build(directory: Path, key: Path, log_level: str = "error", *extra: str) -> dict:
    rendered = run_pylos("manifest", f"-Dlog_level={log_level}", "app.manifest.template",
                         "app.manifest", cwd=directory)
    assert rendered.returncode == 0, rendered.stderr
    signed = run_pylos("sign", "-m", "app.manifest", "-k", str(key), *extra, cwd=directory)
    assert signed.returncode == 0, signed.stderr
    sig = (directory / "app.sig").read_bytes()
    view = run_pylos("sigstruct-view", "--json", "app.sig", cwd=directory)
    assert view.returncode == 0, view.stderr
    return {"sig": sig, "view": json.loads(view.stdout), "stdout": signed.stdout,
            "manifest_sgx": (directory / "app.manifest.sgx").read_bytes()}


def test_gen_key_mode_and_no_overwrite(key_file: Path):
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    before = key_file.read_bytes()
    again = run_pylos("gen-key", str(key_file))
    assert again.returncode == 2 and "--force" in again.stderr
    assert key_file.read_bytes() == before


def test_gen_key_default_location(tmp_path: Path):
    result = run_pylos("gen-key", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert result.returncode == 0
    assert (tmp_path / "pylos" / "enclave-key.pem").exists()


def test_sign_outputs_and_view(tmp_path: Path, key_file: Path):
    out = build(make_app(tmp_path / "a"), key_file)
    assert len(out["sig"]) == 1808
    sig = Sigstruct.unpack(out["sig"])
    assert sig.verify()
    view = out["view"]
    assert view["mr_enclave"] == sig.enclave_hash.hex()
    assert view["debug_enclave"] is True and view["signature_valid"] is True
    assert f"    {view['mr_enclave']}" in out["stdout"]
    assert "Measurement:" in out["stdout"] and "SGX remote attestation: None" in out["stdout"]
    # .manifest.sgx holds the hashes and the LibOS identity.
    assert b'sha256 = "' in out["manifest_sgx"] and b"pylos-libos" in out["manifest_sgx"]
    text = run_pylos("sigstruct-view", "app.sig", cwd=tmp_path / "a").stdout
    assert f"mr_enclave:      {view['mr_enclave']}" in text


def test_sign_twice_is_byte_identical(tmp_path: Path, key_file: Path):
    directory = make_app(tmp_path / "a")
    first = build(directory, key_file)
    second = build(directory, key_file)
    assert first["sig"] == second["sig"]
    assert first["manifest_sgx"] == second["manifest_sgx"]


def test_measurement_follows_inputs_and_nothing_else(tmp_path: Path, key_file: Path):
    base = build(make_app(tmp_path / "a"), key_file)["view"]["mr_enclave"]
    # Same template signed in another directory: the same enclave.
    assert build(make_app(tmp_path / "elsewhere" / "b"), key_file)["view"]["mr_enclave"] == base
    # One trusted file's content changes.
    changed = make_app(tmp_path / "c")
    (changed / "lib" / "libx.so").write_bytes(b"LIB")
    assert build(changed, key_file)["view"]["mr_enclave"] != base
    # loader.log_level changes.
    assert build(make_app(tmp_path / "d"), key_file, "debug")["view"]["mr_enclave"] != base


def test_reproducible_date_and_isv_fields(tmp_path: Path, key_file: Path):
    directory = make_app(tmp_path / "a")
    (directory / "app.manifest.template").write_text(
        TEMPLATE + "sgx.isvprodid = 7\nsgx.isvsvn = 3\n")
    out = build(directory, key_file, "error", "--date", "0000-00-00")
    assert out["view"]["date"] == "0000-00-00"
    assert out["view"]["isv_prod_id"] == 7 and out["view"]["isv_svn"] == 3
    dated = build(directory, key_file, "error", "--date", "2020-02-29")
    assert dated["view"]["date"] == "2020-02-29" and dated["sig"][20:24] == bytes.fromhex("29022020")


def test_custom_output_sigfile_and_depfile(tmp_path: Path, key_file: Path):
    directory = make_app(tmp_path / "a")
    run_pylos("manifest", "-Dlog_level=error", "app.manifest.template", "app.manifest",
              cwd=directory)
    result = run_pylos("sign", "--manifest", "app.manifest", "--output", "out.sgx",
                       "--sigfile", "out.sig", "--key", str(key_file), "--depfile", "app.d",
                       "-q", cwd=directory)
    assert result.returncode == 0 and result.stdout == ""
    assert (directory / "out.sgx").exists() and len((directory / "out.sig").read_bytes()) == 1808
    assert "out.sgx out.sig: app.manifest app lib/libx.so" in (directory / "app.d").read_text()


def write_pem(path: Path, key) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


# Exit status 1: the manifest is rejected; 2: a usage error (the key, an option).
@pytest.mark.parametrize(("case", "status"), [
    ("missing-trusted", 1), ("unknown-key", 1), ("no-key", 2), ("garbage-key", 2),
    ("e65537-key", 2), ("bad-date", 2), ("size-not-power-of-two", 1)])
def test_sign_bad_input_no_output(tmp_path: Path, key_file: Path, case: str, status: int):
    directory = make_app(tmp_path / "a")
    run_pylos("manifest", "-Dlog_level=error", "app.manifest.template", "app.manifest",
              cwd=directory)
    manifest = directory / "app.manifest"
    key, args, message = key_file, [], ""
    if case == "missing-trusted":
        manifest.write_text(manifest.read_text().replace('sha256 = "', 'xx = "', 0)
                            + '\n[[sgx.trusted_files]]\nuri = "file:gone"\n')
        message = "Missing trusted file: 'gone'"
    elif case == "unknown-key":
        manifest.write_text("bogus = 1\n" + manifest.read_text())
        message = "bogus: unknown key"
    elif case == "no-key":
        key, message = tmp_path / "nope.pem", "cannot read signing key"
    elif case == "garbage-key":
        key = tmp_path / "garbage.pem"
        key.write_text("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
        message = "is not a PEM private key"
    elif case == "e65537-key":
        key = write_pem(tmp_path / "e.pem", rsa.generate_private_key(public_exponent=65537,
                                                                     key_size=3072))
        message = "expected public exponent 3"
    elif case == "bad-date":
        args, message = ["--date", "yesterday"], "--date 'yesterday'"
    elif case == "size-not-power-of-two":
        manifest.write_text(manifest.read_text().replace('enclave_size = "256M"',
                                                         'enclave_size = "300M"'))
        message = "Enclave size must be a power of two"
    result = run_pylos("sign", "-m", "app.manifest", "-k", str(key), *args, cwd=directory)
    assert result.returncode == status, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (directory / "app.manifest.sgx").exists() and not (directory / "app.sig").exists()


def test_sigstruct_view_of_real_files(testdata):
    view = json.loads(run_pylos("sigstruct-view", "--json",
                                str(testdata / "sigstruct" / "test_enclave.sig")).stdout)
    assert view == {
        "mr_enclave": "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc",
        "mr_signer": "fb4bab3d6036ac1d730fa83d7366df1dd2dfeac194ef335d6854d8a6c6475542",
        "isv_prod_id": 65535, "isv_svn": 0, "debug_enclave": False,
        "attributes": {"flags": "0x0000000000000004", "xfrm": "0x0000000000000003"},
        "attribute_mask": {"flags": "0xfffffffffffffffd", "xfrm": "0xffffffffffffff1b"},
        "misc_select": "0x00000000", "misc_mask": "0xffffffff", "date": "2016-12-14",
        "signature_valid": True,
    }
    sig1 = json.loads(run_pylos("sigstruct-view", "--output-format", "json",
                                str(testdata / "sigstruct" / "sig1.sigstruct.bin")).stdout)
    assert sig1["mr_enclave"] == "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"
    assert sig1["mr_signer"] == "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
    bad = run_pylos("sigstruct-view", str(testdata / "sigstruct" / "test_enclave.sgxs"))
    assert bad.returncode == 1 and "1808 bytes" in bad.stderr
    assert bad.stderr.startswith(f"ERROR: {testdata / 'sigstruct' / 'test_enclave.sgxs'}: ")


def test_helloworld_example_builds_and_signs(tmp_path: Path, key_file: Path):
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.fail("make and a C compiler are needed (scripts/setup installs them)")
    example = tmp_path / "helloworld"
    shutil.copytree(EXAMPLES / "helloworld", example)
    result = subprocess.run(["make", "-s", "SGX=1", f"PYLOS={PYLOS}",
                             f"SGX_SIGNER_KEY={key_file}"], cwd=example, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert Sigstruct.unpack((example / "helloworld.sig").read_bytes()).verify()
