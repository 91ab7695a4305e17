"""Secret provisioning on loopback: Gramine's wire protocol byte for byte, the server's policy
(refusals logged with the reason), and the client's checks of the server."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pylos.attest import ratls
from pylos.attest.secret_prov import (
    REQUEST,
    RESPONSE,
    SecretServer,
    ensure_server_identity,
    fetch_secret,
    parse_servers,
)
from pylos.attest.verify import Policy
from pylos.errors import PylosError

from attest_common import identity

SECRET = b"\x00provisioned\xffsecret"


def logged(server, text: str) -> bool:
    """Whether the server logged `text` (its per-client thread may still be finishing)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(text in message for _, message in server.logs):
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def server(tmp_path: Path, platform):
    ca, cert, key = ensure_server_identity(tmp_path / "id", ["localhost", "127.0.0.1"])
    logs: list[tuple[str, str]] = []
    started = SecretServer(SECRET, cert, key, {
        "policy": Policy(mr_enclave=b"\x11" * 32), "allow_simulated": True,
        "platform": platform}, lambda level, message: logs.append((level, message)),
        host="127.0.0.1", port=0)
    started.start()
    started.ca = ca.read_bytes()  # type: ignore[attr-defined]
    started.logs = logs  # type: ignore[attr-defined]
    yield started
    started.close()


def test_protocol_constants_are_gramines():
    assert REQUEST == b"SECRET_PROVISION_RA_TLS_REQUEST_V1\0" and len(REQUEST) == 35
    assert RESPONSE == b"SECRET_PROVISION_RA_TLS_RESPONSE_V1:\0" and len(RESPONSE) == 37


def test_raw_wire_exchange(server, platform):
    """A bare pyOpenSSL client speaking the protocol sees exactly Gramine's response."""
    from OpenSSL import SSL

    cert, key = ratls.enclave_certificate(platform, identity(), env={})
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.use_certificate(x509.load_pem_x509_certificate(cert))
    context.use_privatekey(serialization.load_pem_private_key(key, None))
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        conn = SSL.Connection(context, sock)
        conn.set_connect_state()
        conn.do_handshake()
        conn.sendall(REQUEST)
        data = b""
        while len(data) < 37 + 4 + len(SECRET):
            data += conn.recv(4096)
    assert data == RESPONSE + struct.pack(">I", len(SECRET)) + SECRET


def test_right_enclave_gets_the_secret_wrong_one_is_refused(server, platform):
    cert, key = ratls.enclave_certificate(platform, identity(), env={})
    assert fetch_secret(f"localhost:{server.port}", server.ca, cert, key) == SECRET
    cert, key = ratls.enclave_certificate(platform, identity(b"\x99" * 32), env={})
    with pytest.raises(PylosError, match="refused this enclave"):
        fetch_secret(f"127.0.0.1:{server.port}", server.ca, cert, key)
    assert logged(server, "MRENCLAVE 9999"), server.logs
    assert all(level == "warning" for level, m in server.logs if "9999" in m)
    assert not any(SECRET.hex() in m for _, m in server.logs)


def test_ordinary_client_certificate_is_refused(server, tmp_path):
    """A valid TLS client certificate without RA-TLS evidence gets nothing."""
    _, cert, key = ensure_server_identity(tmp_path / "other", ["client"])
    with pytest.raises(PylosError, match="refused"):
        fetch_secret(f"127.0.0.1:{server.port}", server.ca, cert.read_bytes(),
                     key.read_bytes())
    assert logged(server, "not an RA-TLS certificate"), server.logs


def test_client_refuses_a_server_from_another_ca(server, platform, tmp_path):
    other_ca, _, _ = ensure_server_identity(tmp_path / "other", ["localhost"])
    cert, key = ratls.enclave_certificate(platform, identity(), env={})
    with pytest.raises(PylosError, match="TLS handshake failed"):
        fetch_secret(f"127.0.0.1:{server.port}", other_ca.read_bytes(), cert, key)
    assert not any("sent the secret" in m for _, m in server.logs)


def test_client_checks_the_server_name(tmp_path, platform):
    ca, cert_path, key_path = ensure_server_identity(tmp_path / "id", ["secrets.example"])
    server = SecretServer(SECRET, cert_path, key_path, {"allow_simulated": True,
                                                        "policy": Policy()},
                          lambda *_: None, host="127.0.0.1", port=0)
    server.start()
    try:
        cert, key = ratls.enclave_certificate(platform, identity(), env={})
        with pytest.raises(PylosError, match=r"not for '127\.0\.0\.1'"):
            fetch_secret(f"127.0.0.1:{server.port}", ca.read_bytes(), cert, key)
    finally:
        server.close()


def test_server_list_and_unreachable_servers(server, platform):
    assert parse_servers("a:1, b:2;c:3 [::1]:4") == [("a", 1), ("b", 2), ("c", 3), ("::1", 4)]
    for bad in ("", "host", "host:x", "host:0", ":80"):
        with pytest.raises(PylosError):
            parse_servers(bad)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = closed.getsockname()[1]
    closed.close()
    cert, key = ratls.enclave_certificate(platform, identity(), env={})
    # The first server is down: the next one in the list provisions.
    assert fetch_secret(f"127.0.0.1:{dead},localhost:{server.port}", server.ca, cert,
                        key) == SECRET


def test_server_identity_files(tmp_path):
    ca, cert, key = ensure_server_identity(tmp_path / "id", ["localhost"])
    assert (tmp_path / "id").stat().st_mode & 0o777 == 0o700
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "id" / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    again = ensure_server_identity(tmp_path / "id", ["localhost"])
    assert again[0].read_bytes() == ca.read_bytes()  # kept: enclaves were signed with it
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.read_bytes()))


def test_cli_serve_bad_inputs(tmp_path):
    from support import run_pylos

    result = run_pylos("secret-prov", "serve", "--port", "0")
    assert result.returncode == 2 and "exactly one of --secret" in result.stderr
    result = run_pylos("secret-prov", "serve", "--secret-string", "x", "--cert", "c.pem")
    assert result.returncode == 2 and "--cert and --key go together" in result.stderr
    result = run_pylos("secret-prov", "serve", "--secret-string", "x", "--identity-dir",
                       str(tmp_path / "id"), "--port", "0")
    assert result.returncode == 2 and "RA_TLS_MRENCLAVE is not set" in result.stderr
