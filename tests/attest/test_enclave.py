"""Attestation with real enclaves (`pylos run`): a quote made for a signed enclave carries its
SIGSTRUCT's measurements; the secret-provisioning server releases an encrypted mount's key to
the right enclave only (a rebuilt one never starts); an HTTPS server in the enclave uses its
`pylos.ratls` certificate and a Python client verifies it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pylos.attest import ratls
from pylos.attest.platform import SimulatedPlatform
from pylos.attest.quote import make_quote
from pylos.attest.verify import Policy, verify_quote

from support import EXAMPLES, PYLOS, free_port, run_pylos

TEMPLATE = """\
libos.entrypoint = "/bin/sh"
loader.log_level = "error"
loader.env.LD_LIBRARY_PATH = "/lib"
loader.env.PATH = "/bin"
loader.env.BUILD = "{{ build }}"
loader.insecure__use_cmdline_argv = true
fs.mounts = [
  { path = "/lib", uri = "file:{{ gramine.runtimedir() }}" },
  { path = "/bin", uri = "file:/bin" },
  { path = "/ca", uri = "file:ca" },
  { type = "tmpfs", path = "/tmp" },
  { type = "encrypted", path = "/enc", uri = "file:enc/", key_name = "provisioned" },
]
sgx.remote_attestation = "{{ ra }}"
sgx.trusted_files = [
  "file:/bin/sh", "file:/bin/cat", "file:/bin/echo",
  "file:{{ gramine.runtimedir() }}/",
  "file:ca/ca.pem",
]
"""
SECRET_TEXT = "the plaintext only the provisioned key opens\n"
KEY = bytes(range(100, 116))


class ShellEnclave:
    def __init__(self, root: Path, key: Path) -> None:
        self.root, self.key = root, key
        (root / "ca").mkdir(parents=True)
        (root / "enc").mkdir()
        (root / "ca" / "ca.pem").write_text("replaced by a test that provisions secrets\n")

    def build(self, extra: str, build: str = "1", ra: str = "dcap", sign: bool = True) -> None:
        (self.root / "app.manifest.template").write_text(TEMPLATE + extra)
        for stale in ("app.manifest.sgx", "app.sig"):
            (self.root / stale).unlink(missing_ok=True)
        result = run_pylos("manifest", f"-Dbuild={build}", f"-Dra={ra}",
                           "app.manifest.template", "app.manifest", cwd=self.root)
        assert result.returncode == 0, result.stderr
        if sign:
            result = run_pylos("sign", "-m", "app.manifest", "-k", str(self.key), "-q",
                               cwd=self.root)
            assert result.returncode == 0, result.stderr

    def sigstruct(self) -> dict:
        result = run_pylos("sigstruct-view", "--json", "app.sig", cwd=self.root)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def run(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYLOS, "run", "app", "-c", command], cwd=self.root,
                              capture_output=True, text=True, timeout=120)


@pytest.fixture
def shell(tmp_path: Path, key: Path) -> ShellEnclave:
    return ShellEnclave(tmp_path / "app", key)


def test_quote_for_a_signed_enclave_has_its_sigstruct_measurements(shell, platform):
    from pylos.runtime.load import load_enclave

    shell.build("")
    loaded = load_enclave(str(shell.root / "app"))
    assert loaded.identity is not None
    result = verify_quote(make_quote(platform, loaded.identity, b"bound"), allow_simulated=True,
                          platform=platform)
    view = shell.sigstruct()
    assert result.quote.body.mr_enclave.hex() == view["mr_enclave"]
    assert result.quote.body.mr_signer.hex() == view["mr_signer"]
    assert result.quote.body.isv_prod_id == view["isv_prod_id"]
    assert result.quote.body.report_data[:5] == b"bound"


@contextlib.contextmanager
def secret_server(tmp_path: Path, mr_enclave: str, port: int, secret: bytes = KEY,
                  policy: tuple[str, ...] = ()):
    """`pylos secret-prov serve` as a user runs it, with the provisioned key as its secret."""
    (tmp_path / "key.bin").write_bytes(secret)
    log = open(tmp_path / "server.log", "w+")  # noqa: SIM115
    process = subprocess.Popen(
        [PYLOS, "secret-prov", "serve", "--host", "127.0.0.1", "--port", str(port), "--secret",
         str(tmp_path / "key.bin"), "--identity-dir", str(tmp_path / "identity"),
         "--allow-simulated", *(policy or ("--mrenclave", mr_enclave))],
        stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Listening on" not in Path(log.name).read_text():
            assert process.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield tmp_path / "identity" / "ca.pem", lambda: Path(log.name).read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
        log.close()


def test_provisioned_key_opens_encrypted_file_and_rebuilt_enclave_is_refused(shell, tmp_path):
    port = free_port()
    provisioning = (f'pylos.secret_provisioning = {{ server = "localhost:{port}", '
                    'ca = "/ca/ca.pem", set_key = "provisioned" }\n')
    (tmp_path / "plain.txt").write_text(SECRET_TEXT)
    (shell.root / "wrap.key").write_bytes(KEY)
    result = subprocess.run([PYLOS, "pf", "encrypt", "-w", "wrap.key", "-i",
                             str(tmp_path / "plain.txt"), "-o", "enc/secret.txt"],
                            cwd=shell.root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (shell.root / "wrap.key").unlink()  # only the server knows the key now
    from pylos.attest.secret_prov import ensure_server_identity

    ca, _, _ = ensure_server_identity(tmp_path / "identity", ["localhost", "127.0.0.1"])
    (shell.root / "ca" / "ca.pem").write_bytes(ca.read_bytes())
    shell.build(provisioning)
    mr_enclave = shell.sigstruct()["mr_enclave"]
    with secret_server(tmp_path, mr_enclave, port) as (_, server_log):
        result = shell.run("echo STARTED; cat /enc/secret.txt")
        assert result.returncode == 0, result.stderr + server_log()
        assert result.stdout == "STARTED\n" + SECRET_TEXT
        assert "sent the secret to 127.0.0.1" in server_log()
        assert "SIMULATED evidence" in server_log()

        shell.build(provisioning, build="2")  # rebuilt: another MRENCLAVE
        assert shell.sigstruct()["mr_enclave"] != mr_enclave
        result = shell.run("echo STARTED; cat /enc/secret.txt")
        assert result.returncode != 0
        assert "STARTED" not in result.stdout  # the program never started
        assert "secret provisioning failed" in result.stderr
        assert "refused" in server_log() and "MRENCLAVE" in server_log()
    assert KEY.hex() not in result.stderr + server_log()


def test_ca_must_be_a_trusted_file(shell, tmp_path):
    shell.build('pylos.secret_provisioning = { ca = "/tmp/ca.pem", env = "SECRET" }\n')
    result = shell.run("echo STARTED")
    assert result.returncode == 2 and "STARTED" not in result.stdout
    assert "must be a trusted file" in result.stderr


def test_attestation_options_need_an_attestable_enclave(shell):
    ratls_option = 'pylos.ratls = { cert = "/tmp/crt.pem", key = "/tmp/key.pem" }\n'
    shell.build(ratls_option, sign=False)
    result = shell.run("echo STARTED")
    assert result.returncode == 2 and "STARTED" not in result.stdout
    assert "development mode" in result.stderr and "pylos sign" in result.stderr
    shell.build(ratls_option, ra="none")
    result = shell.run("echo STARTED")
    assert result.returncode == 2 and 'remote_attestation = "dcap"' in result.stderr


def test_manifest_schema_for_pylos_options(shell):
    (shell.root / "app.manifest.template").write_text(
        TEMPLATE + 'pylos.secret_provisioning = { ca = "/ca/ca.pem", env = "A", file = "/f" }\n'
        + 'pylos.ratls = { cert = "/tmp/c.pem", kye = "/tmp/k.pem" }\n')
    result = run_pylos("manifest", "-Dbuild=1", "-Dra=dcap", "app.manifest.template",
                       "app.manifest", cwd=shell.root)
    assert result.returncode == 1  # the manifest is rejected
    assert "pylos.secret_provisioning: expected exactly one of set_key, env, file" in result.stderr
    assert "pylos.ratls.kye: unknown key" in result.stderr
    assert "pylos.ratls.key: required key is missing" in result.stderr


def test_ratls_files_are_in_the_enclave_only(shell):
    shell.build('pylos.ratls = { cert = "/tmp/crt.pem", key = "/tmp/key.pem" }\n')
    result = shell.run("cat /tmp/crt.pem /tmp/key.pem")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("-----BEGIN CERTIFICATE-----") == 1
    assert "-----BEGIN PRIVATE KEY-----" in result.stdout
    cert = result.stdout[:result.stdout.index("-----BEGIN PRIVATE KEY-----")].encode()
    checked = ratls.verify_certificate(
        cert, policy=Policy(mr_enclave=bytes.fromhex(shell.sigstruct()["mr_enclave"])),
        allow_simulated=True)
    assert checked.evidence.extension == "tcg"
    assert not any(p.name in ("crt.pem", "key.pem") for p in shell.root.rglob("*"))


HTTPS_SERVER = '''\
import http.server, ssl, sys
class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the enclave\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Hello)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/tmp/crt.pem", "/tmp/key.pem")
server.socket = context.wrap_socket(server.socket, server_side=True)
print("serving", flush=True)
for _ in range(int(sys.argv[2])):
    server.handle_request()
'''


def test_https_server_in_enclave_verified_by_python_client(tmp_path, key, platform_dir):
    python = "/usr/bin/python3"
    if not Path(python).exists():
        pytest.skip(f"{python} is needed in the enclave")
    root = tmp_path / "python"
    (root / "scripts").mkdir(parents=True)
    (root / "helper-files").mkdir()
    (root / "helper-files" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "scripts" / "https.py").write_text(HTTPS_SERVER)
    template = (EXAMPLES / "python" / "python.manifest.template").read_text()
    template = template.replace("sgx.debug = true", "sgx.debug = false")
    (root / "python.manifest.template").write_text(
        template + 'pylos.ratls = { cert = "/tmp/crt.pem", key = "/tmp/key.pem" }\n')
    for args in (("manifest", "-Dlog_level=error", "-Darch_libdir=/lib/x86_64-linux-gnu",
                  f"-Dentrypoint={python}", "-Dra_type=dcap", "python.manifest.template",
                  "python.manifest"),
                 ("sign", "-k", str(key), "-m", "python.manifest", "-q")):
        result = run_pylos(*args, cwd=root)
        assert result.returncode == 0, result.stderr
    mr_enclave = json.loads(run_pylos("sigstruct-view", "--json", "python.sig", cwd=root)
                            .stdout)["mr_enclave"]
    port, handshakes = free_port(), 5
    server = subprocess.Popen([PYLOS, "run", "python", "scripts/https.py", str(port),
                               str(handshakes + 1)], cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == "serving\n", server.stderr.read() if server.stderr else ""
        env = {"RA_TLS_MRENCLAVE": mr_enclave, "RA_TLS_MRSIGNER": "any",
               "RA_TLS_ISV_PROD_ID": "0", "RA_TLS_ISV_SVN": "0",
               ratls.ALLOW_SIMULATED_VAR: "1"}
        platform = SimulatedPlatform(platform_dir)
        for _ in range(handshakes):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                    ratls.client_context().wrap_socket(raw) as tls:
                result = ratls.verify_peer(tls, env=env, platform=platform)
                assert result.verified.simulated
                assert result.verified.quote.body.mr_enclave.hex() == mr_enclave
                tls.sendall(b"GET / HTTP/1.0\r\nHost: enclave\r\n\r\n")
                response = b""
                while chunk := tls.recv(4096):
                    response += chunk
                assert response.endswith(b"hello from the enclave\n")
        # A client expecting another enclave refuses before sending anything.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                ratls.client_context().wrap_socket(raw) as tls, \
                pytest.raises(ratls.VerificationError, match="MRENCLAVE"):
            ratls.verify_peer(tls, env={**env, "RA_TLS_MRENCLAVE": "00" * 32},
                              platform=platform)
        assert server.wait(60) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)


def test_quote_read_in_the_enclave_verifies_on_the_host(shell, tmp_path):
    shell.build("")
    # (user_report_data is per process: `cat` quotes with its own, all zero; the round trip
    # of report_data is tested with the library and with python in tests/runtime.)
    result = subprocess.run([PYLOS, "run", "app", "-c", "cat /dev/attestation/quote"],
                            cwd=shell.root, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    quote = tmp_path / "quote.bin"
    quote.write_bytes(result.stdout)
    view = shell.sigstruct()
    verified = run_pylos("quote", "verify", str(quote), "--allow-simulated", "--mrenclave",
                         view["mr_enclave"], "--mrsigner", view["mr_signer"])
    assert verified.returncode == 0, verified.stderr
    assert "SIMULATED" in verified.stdout
    assert f"MRENCLAVE    : {view['mr_enclave']}" in verified.stdout
    refused = run_pylos("quote", "verify", str(quote))
    assert refused.returncode == 1 and "SIMULATED" in refused.stderr


def test_secret_as_environment_variable_or_file(shell, tmp_path):
    from pylos.attest.secret_prov import ensure_server_identity

    port = free_port()
    ca, _, _ = ensure_server_identity(tmp_path / "identity", ["localhost", "127.0.0.1"])
    (shell.root / "ca" / "ca.pem").write_bytes(ca.read_bytes())
    server = f'server = "127.0.0.1:{port}", ca = "/ca/ca.pem"'
    shell.build(f"pylos.secret_provisioning = {{ {server}, env = \"APP_SECRET\" }}\n")
    signer = shell.sigstruct()["mr_signer"]
    with secret_server(tmp_path, "", port, b"s3cret words",
                       ("--mrsigner", signer)) as (_, server_log):
        result = shell.run('echo "[$APP_SECRET]"')
        assert result.returncode == 0, result.stderr + server_log()
        assert result.stdout == "[s3cret words]\n"
        shell.build(f"pylos.secret_provisioning = {{ {server}, file = \"/run/secret\" }}\n")
        result = shell.run("cat /run/secret; echo; echo x > /run/secret || echo read-only")
        assert result.returncode == 0, result.stderr + server_log()
        assert result.stdout.startswith("s3cret words\n") and "read-only" in result.stdout
        shell.build(f"pylos.secret_provisioning = {{ {server}, set_key = \"k\" }}\n")
        result = shell.run("echo STARTED")
        assert result.returncode == 2 and "STARTED" not in result.stdout
        assert "is 12 bytes; a key is exactly 16" in result.stderr
    assert not any(p.name == "secret" for p in shell.root.rglob("*"))


def test_a_stalled_provisioning_server_is_a_named_start_up_error(shell, tmp_path):
    # A server that accepts the connection and never answers: the start-up watchdog ends the
    # run, naming the stage, instead of a silent hang (runtime/watchdog.py).
    from pylos.attest.secret_prov import ensure_server_identity

    ca, _, _ = ensure_server_identity(tmp_path / "identity", ["127.0.0.1"])
    (shell.root / "ca" / "ca.pem").write_bytes(ca.read_bytes())
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        shell.build(f'pylos.secret_provisioning = {{ server = "127.0.0.1:{port}", '
                    'ca = "/ca/ca.pem", env = "SECRET" }\n')
        started = time.monotonic()
        result = subprocess.run([PYLOS, "run", "app", "-c", "echo STARTED"], cwd=shell.root,
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PYLOS_START_TIMEOUT": "2"})
    assert time.monotonic() - started < 20
    assert result.returncode == 1, result.stderr
    assert "STARTED" not in result.stdout
    assert ("ERROR: the enclave did not start: stage 'attestation set-up' did not finish "
            "within 2 s") in result.stderr


def test_start_timeout_must_be_a_number(shell):
    shell.build("")
    result = subprocess.run([PYLOS, "run", "app", "-c", "echo STARTED"], cwd=shell.root,
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYLOS_START_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert result.stderr.strip() == ("ERROR: PYLOS_START_TIMEOUT='soon': expected a number of "
                                     "seconds above 0")
