"""RA-TLS certificates: Gramine's layout, the real Graphene certificate, verification over real
TLS connections on loopback (Python `ssl` client, pyOpenSSL server), Gramine's RA_TLS_* rules,
and attempts to pass off a certificate whose key the quote does not bind."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pylos.attest import ratls
from pylos.attest.quote import make_quote
from pylos.attest.verify import VerificationError
from pylos.errors import PylosError

from attest_common import RATLS, identity
from support import run_pylos

GRAPHENE = RATLS / "graphene_ratls_cert_sbx_debug.pem"
GRAPHENE_MRENCLAVE = "d1d2ca3da743b572ed3f664664e1ff110eac9913caebca38f034ec9a82a1bd18"
ANY = {name: "any" for name in ratls.MEASUREMENT_VARS}
SIM_ANY = {**ANY, ratls.ALLOW_SIMULATED_VAR: "1"}


@pytest.fixture
def cert_and_key(platform):
    return ratls.enclave_certificate(platform, identity(), env={})


def test_certificate_layout(cert_and_key):
    cert_pem, key_pem = cert_and_key
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert cert.subject == cert.issuer and cert.serial_number == 1
    assert cert.not_valid_before_utc.year == 2001 and cert.not_valid_after_utc.year == 2030
    assert all(not e.critical for e in cert.extensions)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    der = cert.public_bytes(serialization.Encoding.DER)
    # Gramine's legacy OID bytes, tag and length included in the OID value.
    assert bytes.fromhex("060b06092a864886f84d8a3906") in der
    assert bytes.fromhex("0606678105050409") in der
    tagged = cert.extensions.get_extension_for_oid(
        x509.ObjectIdentifier(ratls.TCG_EVIDENCE_OID)).value.value
    assert tagged[:5] == bytes.fromhex("d9ea608259")
    value = cbor2.loads(tagged)
    claims = value.value[1]
    spki = ratls.spki_der(cert.public_key())
    assert len(claims) == 51
    assert claims[:19] == bytes.fromhex("a16b7075626b65792d6861736858248201 5820".replace(" ", ""))
    assert claims[19:] == hashlib.sha256(spki).digest()
    evidence = ratls.extract_evidence(cert)
    assert evidence.extension == "tcg"
    assert evidence.quote.body.report_data == hashlib.sha256(claims).digest() + bytes(32)


def test_simulated_certificate_verifies(cert_and_key, platform):
    result = ratls.verify_certificate(cert_and_key[0], env=SIM_ANY, platform=platform)
    assert result.verified.simulated and result.verified.status == "UpToDate"
    assert result.evidence.extension == "tcg"
    with pytest.raises(VerificationError, match="SIMULATED"):
        ratls.verify_certificate(cert_and_key[0], env=ANY, platform=platform)


def test_gramine_environment_rules(cert_and_key, platform):
    cert = cert_and_key[0]
    for missing in ratls.MEASUREMENT_VARS:
        env = {k: v for k, v in SIM_ANY.items() if k != missing}
        with pytest.raises(PylosError, match=f"A required environment variable {missing} is "
                                             "not set"):
            ratls.verify_certificate(cert, env=env, platform=platform)
    good = {**SIM_ANY, "RA_TLS_MRENCLAVE": "11" * 32, "RA_TLS_MRSIGNER": "22" * 32,
            "RA_TLS_ISV_PROD_ID": "0", "RA_TLS_ISV_SVN": "0"}
    ratls.verify_certificate(cert, env=good, platform=platform)
    for name, value, message in (("RA_TLS_MRENCLAVE", "33" * 32, "MRENCLAVE"),
                                 ("RA_TLS_MRSIGNER", "33" * 32, "MRSIGNER"),
                                 ("RA_TLS_ISV_PROD_ID", "7", "ISVPRODID"),
                                 ("RA_TLS_ISV_SVN", "1", "ISVSVN")):
        with pytest.raises(VerificationError, match=message):
            ratls.verify_certificate(cert, env={**good, name: value}, platform=platform)
    with pytest.raises(PylosError, match="RA_TLS_MRENCLAVE"):
        ratls.verify_certificate(cert, env={**good, "RA_TLS_MRENCLAVE": "xyz"}, platform=platform)
    # ALLOW_* only with exactly "1".
    assert ratls.policy_from_env({**ANY, "RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE": "1"}).allow_debug
    for value in ("true", "yes", "1 ", "01"):
        assert not ratls.policy_from_env({**ANY, "RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE": value}
                                         ).allow_debug
    both = ratls.policy_from_env({**ANY, "RA_TLS_ALLOW_HW_CONFIG_NEEDED": "1",
                                  "RA_TLS_ALLOW_SW_HARDENING_NEEDED": "1"}).accept_tcb
    assert both == {"SWHardeningNeeded", "ConfigurationNeeded",
                    "ConfigurationAndSWHardeningNeeded"}
    assert ratls.policy_from_env(ANY).accept_tcb == frozenset()


def test_debug_enclave_needs_the_gramine_variable(platform):
    cert, _ = ratls.enclave_certificate(platform, identity(debug=True), env={})
    with pytest.raises(VerificationError, match="DEBUG"):
        ratls.verify_certificate(cert, env=SIM_ANY, platform=platform)
    ratls.verify_certificate(cert, env={**SIM_ANY, "RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE": "1"},
                             platform=platform)


def _reissue(cert: x509.Certificate, key, extensions) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(cert.not_valid_before_utc)
               .not_valid_after(cert.not_valid_after_utc))
    for oid, value in extensions:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_evidence_moved_to_another_key_is_rejected(cert_and_key, platform):
    """An attacker copies an enclave's extensions into a certificate for their own key."""
    cert = x509.load_pem_x509_certificate(cert_and_key[0])
    stolen = [(e.oid.dotted_string, e.value.value) for e in cert.extensions
              if isinstance(e.value, x509.UnrecognizedExtension)]
    attacker = ec.generate_private_key(ec.SECP384R1())
    forged = _reissue(cert, attacker, stolen)
    with pytest.raises(VerificationError, match="pubkey-hash"):
        ratls.verify_certificate(forged, env=SIM_ANY, platform=platform)
    legacy_only = _reissue(cert, attacker, [s for s in stolen if s[0] != ratls.TCG_EVIDENCE_OID])
    with pytest.raises(VerificationError, match="REPORTDATA mismatch"):
        ratls.verify_certificate(legacy_only, env=SIM_ANY, platform=platform)
    # A quote that binds the attacker's claims but not their key's hash is refused too.
    spki = ratls.spki_der(attacker.public_key())
    claims = cbor2.dumps({"pubkey-hash": cbor2.dumps([1, hashlib.sha256(b"other").digest()])})
    quote = make_quote(platform, identity(), hashlib.sha256(claims).digest())
    tagged = cbor2.dumps(cbor2.CBORTag(60000, [quote, claims]))
    with pytest.raises(VerificationError, match="pubkey-hash"):
        ratls.verify_certificate(_reissue(cert, attacker, [(ratls.TCG_EVIDENCE_OID, tagged)]),
                                 env=SIM_ANY, platform=platform)
    assert spki  # the attacker's real key hash is what the verifier compared against


def test_legacy_extension_with_the_intended_oid(platform):
    """Both spellings of the legacy OID are found (the quirk one and the standard one)."""
    key = ec.generate_private_key(ec.SECP384R1())
    quote = make_quote(platform, identity(), hashlib.sha256(ratls.spki_der(key.public_key()))
                       .digest())
    template = x509.load_pem_x509_certificate(
        ratls.enclave_certificate(platform, identity(), env={})[0])
    for oid in (ratls.LEGACY_OID, ratls.LEGACY_OID_QUIRK):
        cert = _reissue(template, key, [(oid, quote)])
        result = ratls.verify_certificate(cert, env=SIM_ANY, platform=platform)
        assert result.evidence.extension == "legacy" and result.evidence.oid == oid
        assert result.evidence.warnings


def test_graphene_certificate_parses_and_is_rejected():
    cert = ratls.load_certificate(GRAPHENE.read_bytes())
    evidence = ratls.extract_evidence(cert)
    assert evidence.oid == ratls.LEGACY_OID_QUIRK and evidence.extension == "legacy"
    assert evidence.quote.body.mr_enclave.hex() == GRAPHENE_MRENCLAVE
    assert evidence.quote.body.attributes.debug
    assert len(evidence.raw_quote) == 4748
    with pytest.raises(VerificationError, match="not the production Intel SGX Root CA key") as e:
        ratls.verify_certificate(cert, env={**ANY, "RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE": "1"})
    assert "DEBUG" in str(e.value)


def test_cli_ratls_verify(cert_and_key, tmp_path):
    result = run_pylos("ratls", "verify", str(GRAPHENE), env=ANY)
    assert result.returncode == 1
    assert f"MRENCLAVE    : {GRAPHENE_MRENCLAVE}" in result.stdout
    assert "not the production Intel SGX Root CA key" in result.stderr
    assert "DEBUG" in result.stderr
    path = tmp_path / "cert.pem"
    path.write_bytes(cert_and_key[0])
    result = run_pylos("ratls", "verify", str(path), "--allow-simulated", "--mrenclave",
                       "11" * 32)
    assert result.returncode == 0, result.stderr
    assert "SIMULATED" in result.stdout
    result = run_pylos("ratls", "verify", str(path), "--allow-simulated")
    assert result.returncode == 2 and "RA_TLS_MRENCLAVE is not set" in result.stderr
    assert "Give the policy as options (--mrenclave HEX, --mrsigner HEX" in result.stderr


def _tls_server(cert_pem: bytes, key_pem: bytes, tmp_path) -> tuple[socket.socket, threading.Thread]:
    """A Python `ssl` server on loopback presenting the RA-TLS certificate, answering 'hello'."""
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_client_verifies_after_ssl_handshake(cert_and_key, platform, tmp_path):
    listener, thread = _tls_server(*cert_and_key, tmp_path)
    try:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                ratls.client_context().wrap_socket(raw) as tls:
            result = ratls.verify_peer(tls, env=SIM_ANY, platform=platform)
            assert result.verified.quote.body.mr_enclave == b"\x11" * 32
            assert tls.recv(5) == b"hello"
        thread.join(10)
    finally:
        listener.close()


def test_pyopenssl_server_accepts_only_verified_client_certs(cert_and_key, platform, tmp_path):
    from OpenSSL import SSL

    from pylos.attest.secret_prov import ensure_server_identity

    _, server_cert, server_key = ensure_server_identity(tmp_path / "id", ["127.0.0.1"])
    outcomes: list = []

    def server_once(listener: socket.socket, env: dict) -> None:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.use_certificate_chain_file(str(server_cert))
        context.use_privatekey_file(str(server_key))
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                           ratls.openssl_verify_callback(outcomes.append, env=env,
                                                         platform=platform))
        client, _ = listener.accept()
        conn = SSL.Connection(context, client)
        conn.set_accept_state()
        try:
            conn.do_handshake()
            conn.sendall(b"welcome")
        except SSL.Error:
            pass
        finally:
            client.close()

    def client(port: int) -> bytes:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.use_certificate(x509.load_pem_x509_certificate(cert_and_key[0]))
        context.use_privatekey(serialization.load_pem_private_key(cert_and_key[1], None))
        sock = socket.create_connection(("127.0.0.1", port))
        conn = SSL.Connection(context, sock)
        conn.set_connect_state()
        try:
            conn.do_handshake()
            return conn.recv(7)
        except SSL.Error:
            return b""
        finally:
            sock.close()

    for env, expected in ((SIM_ANY, b"welcome"), ({**SIM_ANY, "RA_TLS_MRENCLAVE": "00" * 32},
                                                  b"")):
        listener = socket.create_server(("127.0.0.1", 0))
        thread = threading.Thread(target=server_once, args=(listener, env), daemon=True)
        thread.start()
        try:
            assert client(listener.getsockname()[1]) == expected
        finally:
            thread.join(10)
            listener.close()
    assert isinstance(outcomes[0], ratls.RatlsResult)
    assert isinstance(outcomes[1], VerificationError) and "MRENCLAVE" in str(outcomes[1])


def test_ratls_connect_verifies_a_live_server(cert_and_key, tmp_path):
    listener, thread = _tls_server(*cert_and_key, tmp_path)
    try:
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        result = run_pylos("ratls", "connect", address, "--allow-simulated", "--mrenclave",
                           "11" * 32, "--isv-prodid", "0", "--json")
        assert result.returncode == 0, result.stderr
        verdict = json.loads(result.stdout)
        assert verdict["verified"] and verdict["simulated"]
        assert verdict["mr_enclave"] == "11" * 32
        thread.join(10)
    finally:
        listener.close()
    listener, thread = _tls_server(*cert_and_key, tmp_path)
    try:
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        result = run_pylos("ratls", "connect", address, "--allow-simulated", "--mrenclave",
                           "22" * 32)
        assert result.returncode == 1
        assert f"is not the expected {'22' * 32}" in result.stderr
        # Without --allow-simulated, simulated evidence is refused.
        thread.join(10)
    finally:
        listener.close()
    refused = run_pylos("ratls", "connect", address, "--mrenclave", "11" * 32)
    assert refused.returncode == 1 and "cannot connect" in refused.stderr
    bad = run_pylos("ratls", "connect", "no-port", "--mrenclave", "11" * 32)
    assert bad.returncode == 2 and "expected HOST:PORT" in bad.stderr
