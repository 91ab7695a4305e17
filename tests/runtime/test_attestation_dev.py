"""`/dev/attestation` in `pylos run` (Gramine semantics, docs/formats.md) with Python in the
enclave: Gramine's CI-Examples `sgx-report.py` / `sgx-quote.py` verbatim, per-process state,
keys/ and the sealing keys (Gramine's `sealed_file_mod` behaviour across a rebuild)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from support import EXAMPLES, PYLOS

PYTHON = "/usr/bin/python3"

# Gramine CI-Examples/python/scripts/sgx-report.py and sgx-quote.py, verbatim.
SGX_REPORT_PY = '''\
#!/usr/bin/env python3

import os
import sys

if not os.path.exists("/dev/attestation/report"):
    print("Cannot find `/dev/attestation/report`; are you running under SGX?")
    sys.exit(1)

with open("/dev/attestation/my_target_info", "rb") as f:
    my_target_info = f.read()

with open("/dev/attestation/target_info", "wb") as f:
    f.write(my_target_info)

with open("/dev/attestation/user_report_data", "wb") as f:
    f.write(b'\\0'*64)

with open("/dev/attestation/report", "rb") as f:
    report = f.read()

print(f"Generated SGX report with size = {len(report)} and the following fields:")
print(f"  ATTRIBUTES.FLAGS: {report[48:56].hex()}  [ Debug bit: {report[48] & 2 > 0} ]")
print(f"  ATTRIBUTES.XFRM:  {report[56:64].hex()}")
print(f"  MRENCLAVE:        {report[64:96].hex()}")
print(f"  MRSIGNER:         {report[128:160].hex()}")
print(f"  ISVPRODID:        {report[256:258].hex()}")
print(f"  ISVSVN:           {report[258:260].hex()}")
print(f"  REPORTDATA:       {report[320:352].hex()}")
print(f"                    {report[352:384].hex()}")
'''

SGX_QUOTE_PY = '''\
#!/usr/bin/env python3

import os
import sys

if not os.path.exists("/dev/attestation/quote"):
    print("Cannot find `/dev/attestation/quote`; "
          "are you running under SGX, with remote attestation enabled?")
    sys.exit(1)

with open("/dev/attestation/attestation_type") as f:
    print(f"Detected attestation type: {f.read()}")

with open("/dev/attestation/user_report_data", "wb") as f:
    f.write(b'\\0'*64)

with open("/dev/attestation/quote", "rb") as f:
    quote = f.read()

print(f"Extracted SGX quote with size = {len(quote)} and the following fields:")
print(f"  ATTRIBUTES.FLAGS: {quote[96:104].hex()}  [ Debug bit: {quote[96] & 2 > 0} ]")
print(f"  ATTRIBUTES.XFRM:  {quote[104:112].hex()}")
print(f"  MRENCLAVE:        {quote[112:144].hex()}")
print(f"  MRSIGNER:         {quote[176:208].hex()}")
print(f"  ISVPRODID:        {quote[304:306].hex()}")
print(f"  ISVSVN:           {quote[306:308].hex()}")
print(f"  REPORTDATA:       {quote[368:400].hex()}")
print(f"                    {quote[400:432].hex()}")
'''

# Everything else the tests ask of /dev/attestation, one JSON object per command.
CHECKS_PY = '''\
import errno, json, os, sys, threading

A = "/dev/attestation/"

def read(name):
    with open(A + name, "rb") as f:
        return f.read()

def write(name, data):
    try:
        fd = os.open(A + name, os.O_WRONLY)
        try:
            return os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as e:
        return errno.errorcode[e.errno]

out = {}
command = sys.argv[1]
if command == "listing":
    out["root"] = sorted(os.listdir(A))
    out["keys"] = sorted(os.listdir(A + "keys"))
elif command == "report-data":
    out["short"] = write("user_report_data", b"abc")
    out["after_short"] = read("user_report_data").hex()
    out["long"] = write("user_report_data", bytes(range(100)))
    out["after_long"] = read("user_report_data").hex()
    out["quote"] = read("quote").hex()
    out["report"] = read("report").hex()
    out["my_target_info"] = read("my_target_info").hex()
    out["bad_target_info"] = write("target_info", b"\\xff" * 512)
    try:
        read("report")
    except OSError as e:
        out["report_with_bad_target"] = errno.errorcode[e.errno]
elif command == "per-process":
    write("user_report_data", b"parent")
    seen = {}
    t = threading.Thread(target=lambda: seen.update(thread=read("user_report_data")[:6].hex()))
    t.start(); t.join()
    out.update(seen)
    r, w = os.pipe()
    if os.fork() == 0:
        os.write(w, read("user_report_data")[:6])
        os._exit(0)
    os.wait()
    out["child"] = os.read(r, 64).hex()
    out["parent"] = read("user_report_data")[:6].hex()
elif command == "keys":
    out["mrenclave"] = read("keys/_sgx_mrenclave").hex()
    out["mrsigner"] = read("keys/_sgx_mrsigner").hex()
    out["write_sealing"] = write("keys/_sgx_mrenclave", bytes(16))
    out["write_15"] = write("keys/default", bytes(15))
    out["write_17"] = write("keys/default", bytes(17))
    out["unset"] = read("keys/default").hex()
    out["write_16"] = write("keys/default", bytes(range(16)))
    out["set"] = read("keys/default").hex()
elif command == "seal-write":
    for name in ("enclave", "signer"):
        with open(f"/sealed_{name}/data.txt", "w") as f:
            f.write(f"sealed by {name} policy\\n")
elif command == "seal-read":
    for name in ("enclave", "signer"):
        try:
            with open(f"/sealed_{name}/data.txt") as f:
                out[name] = f.read()
        except OSError as e:
            out[name] = errno.errorcode[e.errno]
print(json.dumps(out))
'''

SEALED_MOUNTS = "".join(
    f'  {{ type = "encrypted", path = "/sealed_{name}/", uri = "file:sealed_{name}/", '
    f'key_name = "_sgx_mr{name}" }},\n' for name in ("enclave", "signer"))


class PythonEnclave:
    """Gramine's python example manifest (read in place from examples/python), with scripts."""

    def __init__(self, root: Path, key: Path, platform: Path) -> None:
        self.root = root
        self.key = key
        self.env = {**os.environ, "PYLOS_PLATFORM_DIR": str(platform)}
        (root / "scripts").mkdir(parents=True, exist_ok=True)
        (root / "helper-files").mkdir(exist_ok=True)
        (root / "helper-files" / "hosts").write_text("127.0.0.1 localhost\n")
        for name, text in (("sgx-report.py", SGX_REPORT_PY), ("sgx-quote.py", SGX_QUOTE_PY),
                           ("checks.py", CHECKS_PY)):
            (root / "scripts" / name).write_text(text)

    def pylos(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYLOS, *args], cwd=self.root, capture_output=True, text=True,
                              env=self.env, timeout=120)

    def build(self, ra_type: str = "dcap", sign: bool = True, extra: str = "",
              mounts: str = "", log_level: str = "error") -> None:
        template = (EXAMPLES / "python" / "python.manifest.template").read_text()
        template = template.replace('  { type = "tmpfs", path = "/tmp" },\n',
                                    '  { type = "tmpfs", path = "/tmp" },\n' + mounts)
        (self.root / "python.manifest.template").write_text(template + extra)
        for stale in ("python.manifest.sgx", "python.sig"):
            (self.root / stale).unlink(missing_ok=True)
        result = self.pylos("manifest", f"-Dlog_level={log_level}",
                            "-Darch_libdir=/lib/x86_64-linux-gnu", f"-Dentrypoint={PYTHON}",
                            f"-Dra_type={ra_type}", "python.manifest.template", "python.manifest")
        assert result.returncode == 0, result.stderr
        if sign:
            result = self.pylos("sign", "-k", str(self.key), "-m", "python.manifest", "-q")
            assert result.returncode == 0, result.stderr

    def run(self, script: str, *args: str) -> subprocess.CompletedProcess:
        return self.pylos("run", "python", f"scripts/{script}", *args)

    def checks(self, command: str) -> dict:
        result = self.run("checks.py", command)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    def sigstruct(self):
        from pylos.sgx.sigstruct import Sigstruct

        return Sigstruct.unpack((self.root / "python.sig").read_bytes())

    def identity(self):
        from pylos.runtime.load import enclave_identity

        return enclave_identity(self.sigstruct())


@pytest.fixture(scope="module")
def platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("platform") / "sim-platform"


@pytest.fixture
def python_enclave(tmp_path: Path, key: Path, platform_dir: Path) -> PythonEnclave:
    if not Path(PYTHON).exists():
        pytest.skip(f"{PYTHON} is needed in the enclave")
    return PythonEnclave(tmp_path / "python", key, platform_dir)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, key: Path,
           platform_dir: Path) -> PythonEnclave:
    """One signed python enclave with remote attestation (dcap), shared by several tests."""
    if not Path(PYTHON).exists():
        pytest.skip(f"{PYTHON} is needed in the enclave")
    enclave = PythonEnclave(tmp_path_factory.mktemp("signed"), key, platform_dir)
    (enclave.root / "enc").mkdir()
    # A mount naming key "default" without setting it: keys/default exists, empty.
    enclave.build(mounts='  { type = "encrypted", path = "/enc/", uri = "file:enc/" },\n')
    return enclave


def test_gramine_sgx_report_script(signed):
    result = signed.run("sgx-report.py")
    assert result.returncode == 0, result.stdout + result.stderr
    sig = signed.sigstruct()
    lines = result.stdout.splitlines()
    assert lines[0] == "Generated SGX report with size = 432 and the following fields:"
    assert lines[1].startswith("  ATTRIBUTES.FLAGS: 07") and lines[1].endswith(
        "[ Debug bit: True ]")  # INIT | DEBUG | MODE64BIT (sgx.debug = true)
    assert lines[3] == f"  MRENCLAVE:        {sig.enclave_hash.hex()}"
    assert lines[4] == f"  MRSIGNER:         {sig.mr_signer().hex()}"
    assert lines[5] == "  ISVPRODID:        0000" and lines[6] == "  ISVSVN:           0000"
    assert lines[7] == "  REPORTDATA:       " + "00" * 32


def test_gramine_sgx_quote_script(signed):
    result = signed.run("sgx-quote.py")
    assert result.returncode == 0, result.stdout + result.stderr
    sig = signed.sigstruct()
    lines = result.stdout.splitlines()
    assert lines[0] == "Detected attestation type: dcap"
    assert lines[1].startswith("Extracted SGX quote with size = ")
    assert lines[4] == f"  MRENCLAVE:        {sig.enclave_hash.hex()}"
    assert lines[5] == f"  MRSIGNER:         {sig.mr_signer().hex()}"
    assert lines[8] == "  REPORTDATA:       " + "00" * 32


def test_report_data_target_info_report_and_quote(signed, platform_dir):
    from pylos.attest.platform import SimulatedPlatform
    from pylos.attest.report import verify_report
    from pylos.attest.verify import Policy, verify_quote
    from pylos.errors import PylosError
    from pylos.sgx.structs import TargetInfo

    out = signed.checks("report-data")
    assert out["short"] == 3
    assert out["after_short"] == (b"abc" + bytes(61)).hex()  # short writes zero-padded
    assert out["long"] == 100
    assert out["after_long"] == bytes(range(64)).hex()  # longer ones truncated
    identity = signed.identity()
    assert out["my_target_info"] == TargetInfo.of(identity).pack().hex()
    platform = SimulatedPlatform(platform_dir)
    # target_info was never written in this process: all zeros, so the report is for an
    # enclave with an all-zero identity; its body still names this enclave.
    report = bytes.fromhex(out["report"])
    assert report[320:384] == bytes(range(64))
    assert report[64:96] == identity.mr_enclave
    verify_report(platform, identity.__class__(), report)
    quote = bytes.fromhex(out["quote"])
    debug_ok = Policy(allow_debug=True)  # the example's manifest has sgx.debug = true
    verified = verify_quote(quote, allow_simulated=True, platform=platform, policy=debug_ok)
    assert verified.simulated
    assert verified.quote.body.report_data == bytes(range(64))  # report_data round-trips
    assert verified.quote.body.mr_enclave == identity.mr_enclave
    with pytest.raises(PylosError, match="SIMULATED"):
        verify_quote(quote, platform=platform, policy=debug_ok)
    assert out["bad_target_info"] == 512  # stored; EREPORT refuses it when the report is read
    assert out["report_with_bad_target"] == "EINVAL"


def test_report_for_own_target_verifies(signed, platform_dir):
    from pylos.attest.platform import SimulatedPlatform
    from pylos.attest.report import ReportError, verify_report

    result = signed.run("checks.py", "report-data")
    assert result.returncode == 0, result.stderr
    # sgx-report.py's flow: target_info = my_target_info; the report verifies as ours only.
    out = signed.pylos("run", "python", "-c",
                       "t=open('/dev/attestation/my_target_info','rb').read();"
                       "open('/dev/attestation/target_info','wb').write(t);"
                       "print(open('/dev/attestation/report','rb').read().hex())")
    assert out.returncode == 0, out.stderr
    report = bytes.fromhex(out.stdout.strip())
    platform = SimulatedPlatform(platform_dir)
    assert verify_report(platform, signed.identity(), report).mr_enclave == (
        signed.identity().mr_enclave)
    tampered = bytearray(report)
    tampered[100] ^= 1
    with pytest.raises(ReportError):
        verify_report(platform, signed.identity(), bytes(tampered))


def test_state_is_per_process(signed):
    out = signed.checks("per-process")
    assert out["thread"] == b"parent".hex()  # threads share their process's state
    assert out["child"] == bytes(6).hex()  # a new process starts from zeros
    assert out["parent"] == b"parent".hex()


def test_listing_and_keys(signed, platform_dir):
    from pylos.attest.platform import SimulatedPlatform
    from pylos.sgx.egetkey import sealing_key

    listing = signed.checks("listing")
    assert listing["root"] == ["attestation_type", "keys", "my_target_info", "quote", "report",
                               "target_info", "user_report_data"]
    assert listing["keys"] == ["_sgx_mrenclave", "_sgx_mrsigner", "default"]
    out = signed.checks("keys")
    secret = SimulatedPlatform(platform_dir).secret
    assert out["mrenclave"] == sealing_key(secret, signed.identity(), "mrenclave").hex()
    assert out["mrsigner"] == sealing_key(secret, signed.identity(), "mrsigner").hex()
    assert out["write_sealing"] == "EACCES"
    assert out["write_15"] == out["write_17"] == "EACCES"  # Gramine's errno for a bad key
    assert out["unset"] == ""
    assert out["write_16"] == 16 and out["set"] == bytes(range(16)).hex()
    # Through O_CREAT (Python's "wb") a new key file appears; then lengths are checked.
    created = signed.pylos("run", "python", "-c", CHECKS_PY.split("out = {}")[0] +
                           "open(A + 'keys/new', 'wb').close();"
                           "print(write('keys/new', bytes(15)), write('keys/new', bytes(17)),"
                           " read('keys/new').hex(), write('keys/new', bytes(range(16))),"
                           " read('keys/new').hex(), sorted(os.listdir(A + 'keys')))")
    assert created.returncode == 0, created.stderr
    assert created.stdout.split() == ["EACCES", "EACCES", "16", bytes(range(16)).hex(),
                                      "['_sgx_mrenclave',", "'_sgx_mrsigner',", "'default',",
                                      "'new']"]


def test_remote_attestation_none_has_no_quote(python_enclave):
    python_enclave.build(ra_type="none")
    out = python_enclave.checks("listing")
    assert "quote" not in out["root"] and "report" in out["root"]
    result = python_enclave.run("sgx-quote.py")
    assert result.stdout.startswith("Cannot find `/dev/attestation/quote`")
    typed = python_enclave.pylos("run", "python", "-c",
                                 "print(open('/dev/attestation/attestation_type').read())")
    assert typed.stdout == "none\n"


def test_development_mode_has_only_keys(python_enclave):
    python_enclave.build(sign=False, log_level="warning")
    result = python_enclave.run("checks.py", "listing")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"root": ["keys"], "keys": []}
    assert "only keys/ exists; sign the manifest for report and quote" in result.stderr
    report = python_enclave.run("sgx-report.py")
    assert report.stdout.startswith("Cannot find `/dev/attestation/report`")


def test_sealing_keys_across_runs_and_rebuilds(python_enclave):
    """Gramine's sealed_file_mod: a rebuilt enclave (new MRENCLAVE, same signer) reads the
    `_sgx_mrsigner` file and is refused the `_sgx_mrenclave` one."""
    for name in ("sealed_enclave", "sealed_signer"):
        (python_enclave.root / name).mkdir()
    python_enclave.build(mounts=SEALED_MOUNTS)
    first = python_enclave.sigstruct().enclave_hash
    assert python_enclave.checks("seal-write") == {}
    for name in ("sealed_enclave", "sealed_signer"):
        data = (python_enclave.root / name / "data.txt").read_bytes()
        assert data.startswith(b"GRAFS_PF") and b"sealed by" not in data
    # The same enclave, another run: same keys.
    assert python_enclave.checks("seal-read") == {"enclave": "sealed by enclave policy\n",
                                                  "signer": "sealed by signer policy\n"}
    python_enclave.build(mounts=SEALED_MOUNTS, extra='loader.env.REBUILT = "1"\n',
                         log_level="error")
    assert python_enclave.sigstruct().enclave_hash != first
    result = python_enclave.run("checks.py", "seal-read")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"enclave": "EACCES",
                                         "signer": "sealed by signer policy\n"}
    assert "/sealed_enclave/data.txt" in result.stderr  # the refusal names the file


def test_sealing_keys_never_logged(python_enclave, platform_dir):
    from pylos.attest.platform import SimulatedPlatform
    from pylos.sgx.egetkey import sealing_key

    for name in ("sealed_enclave", "sealed_signer"):
        (python_enclave.root / name).mkdir()
    python_enclave.build(mounts=SEALED_MOUNTS, log_level="trace")
    result = python_enclave.run("checks.py", "seal-write")
    assert result.returncode == 0, result.stderr
    keys_out = python_enclave.run("checks.py", "keys")
    assert "[pylos] trace" in result.stderr
    secret = SimulatedPlatform(platform_dir).secret
    identity = python_enclave.identity()
    for key in (sealing_key(secret, identity, "mrenclave"), sealing_key(secret, identity,
                                                                        "mrsigner"), secret):
        for log in (result.stderr, keys_out.stderr):
            assert key.hex() not in log and key.hex().upper() not in log
            assert str(key) not in log
