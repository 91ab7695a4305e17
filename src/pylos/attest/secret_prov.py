"""Secret provisioning over RA-TLS, in Gramine's wire protocol (docs/formats.md).

The enclave (client) connects with its RA-TLS certificate as TLS client certificate and
checks the server against a CA it trusts; the server verifies the client's evidence against
its policy during the handshake (pyOpenSSL verify callback: Python's `ssl` cannot accept a
self-signed client certificate) and only then answers the request:

    client → server   "SECRET_PROVISION_RA_TLS_REQUEST_V1\\0"              (35 bytes)
    server → client   "SECRET_PROVISION_RA_TLS_RESPONSE_V1:\\0" ‖ u32 BE size ‖ secret

Gramine's `secret_prov_attest` clients speak the same protocol.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pylos.errors import PylosError
from pylos.hashing import write_atomic

REQUEST = b"SECRET_PROVISION_RA_TLS_REQUEST_V1\0"
RESPONSE = b"SECRET_PROVISION_RA_TLS_RESPONSE_V1:\0"
MAX_SECRET = 1 << 20
DEFAULT_SERVERS = "localhost:4433"
IO_TIMEOUT = 30.0  # seconds a peer may stall a handshake or a read

Log = Callable[[str, str], None]


# --- the server's own TLS identity ----------------------------------------------------------

def ensure_server_identity(directory: Path, hostnames: list[str]) -> tuple[Path, Path, Path]:
    """A local CA and a server certificate it signs (for `hostnames`), created once in
    `directory` (0700; keys 0600). Returns (ca.pem, server.pem, server-key.pem)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_path, cert_path, key_path = (directory / "ca.pem", directory / "server.pem",
                                    directory / "server-key.pem")
    if ca_path.exists() and cert_path.exists() and key_path.exists():
        return ca_path, cert_path, key_path
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pylos secret-prov local CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    pkcs8 = (pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_atomic(directory / "ca-key.pem", ca_key.private_bytes(*pkcs8), mode=0o600)
    write_atomic(key_path, key.private_bytes(*pkcs8), mode=0o600)
    write_atomic(cert_path, cert.public_bytes(pem), mode=0o644)
    write_atomic(ca_path, ca.public_bytes(pem), mode=0o644)
    return ca_path, cert_path, key_path


# --- server ---------------------------------------------------------------------------------

@dataclass
class SecretServer:
    """An RA-TLS secret-provisioning server on a bound socket; `serve_forever` or
    `start()` (a daemon thread) and `close()`."""

    secret: bytes
    cert_path: Path
    key_path: Path
    verify_kwargs: dict[str, Any]  # for `ratls.verify_certificate` (policy, allow_simulated...)
    log: Log
    host: str = "0.0.0.0"
    port: int = 4433

    def __post_init__(self) -> None:
        from OpenSSL import SSL

        if len(self.secret) > MAX_SECRET:
            raise PylosError(f"the secret is {len(self.secret)} bytes; at most {MAX_SECRET}")
        try:
            self._context(lambda *_args: False).check_privatekey()
        except SSL.Error as exc:
            raise PylosError(f"server certificate/key '{self.cert_path}', '{self.key_path}': "
                             f"{exc}") from None
        self.sock = socket.create_server((self.host, self.port), reuse_port=False)
        self.port = self.sock.getsockname()[1]
        self._closed = threading.Event()

    def _context(self, callback: Callable[..., bool]) -> Any:
        from OpenSSL import SSL

        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.use_certificate_chain_file(str(self.cert_path))
        context.use_privatekey_file(str(self.key_path))
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, callback)
        return context

    def handle(self, client: socket.socket, peer: str) -> bool:
        """One client: True if it was sent the secret."""
        from OpenSSL import SSL

        from pylos.attest.ratls import RatlsResult, openssl_verify_callback

        verdict: dict[str, Any] = {}
        # A context per client: the verify callback reports into this client's verdict.
        context = self._context(openssl_verify_callback(
            lambda result: verdict.__setitem__("result", result), **self.verify_kwargs))
        _blocking_with_timeout(client)
        conn = SSL.Connection(context, client)
        conn.set_accept_state()
        try:
            try:
                conn.do_handshake()
            except SSL.Error as exc:
                why = verdict.get("result")
                reason = str(why) if isinstance(why, Exception) else f"TLS handshake: {exc}"
                self.log("warning", f"refused {peer}: {reason}")
                return False
            result = verdict.get("result")
            if not isinstance(result, RatlsResult):
                self.log("warning", f"refused {peer}: no RA-TLS client certificate")
                return False
            request = _recv_exact(conn, len(REQUEST))
            if request != REQUEST:
                self.log("warning", f"refused {peer}: not a secret-provisioning request")
                return False
            conn.sendall(RESPONSE + struct.pack(">I", len(self.secret)) + self.secret)
            body = result.verified.quote.body
            self.log("info", f"sent the secret to {peer}: MRENCLAVE {body.mr_enclave.hex()}, "
                     f"MRSIGNER {body.mr_signer.hex()}, TCB {result.verified.status}"
                     + (" (SIMULATED evidence)" if result.verified.simulated else ""))
            return True
        except (SSL.Error, OSError, ConnectionError) as exc:
            self.log("warning", f"{peer}: connection failed: {exc}")
            return False
        finally:
            with contextlib.suppress(SSL.Error, OSError):
                conn.shutdown()
            client.close()

    def serve_forever(self) -> None:
        while not self._closed.is_set():
            try:
                client, address = self.sock.accept()
            except OSError:
                if self._closed.is_set():
                    return
                raise
            peer = f"{address[0]}:{address[1]}"
            threading.Thread(target=self.handle, args=(client, peer), daemon=True).start()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _blocking_with_timeout(sock: socket.socket) -> None:
    """pyOpenSSL needs a blocking socket (a Python timeout makes it non-blocking and reads
    fail with WantReadError); the kernel's SO_RCVTIMEO/SO_SNDTIMEO bound a stalled peer."""
    sock.settimeout(None)
    limit = struct.pack("ll", int(IO_TIMEOUT), 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)


def _recv_exact(conn: Any, size: int) -> bytes:
    from OpenSSL import SSL

    data = b""
    while len(data) < size:
        try:
            chunk = conn.recv(size - len(data))
        except SSL.ZeroReturnError:
            break
        if not chunk:
            break
        data += chunk
    return data


# --- client (the enclave side) --------------------------------------------------------------

def parse_servers(text: str) -> list[tuple[str, int]]:
    """Gramine's SECRET_PROVISION_SERVERS: host:port items separated by `,`, `;` or spaces."""
    servers = []
    for item in text.replace(",", " ").replace(";", " ").split():
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise PylosError(f"secret provisioning server {item!r}: expected host:port")
        servers.append((host.strip("[]"), int(port)))
    if not servers:
        raise PylosError("no secret provisioning server given")
    return servers


def _hostname_matches(cert: x509.Certificate, host: str) -> bool:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(host)
        return address in names.get_values_for_type(x509.IPAddress)
    except ValueError:
        return host.lower() in (n.lower() for n in names.get_values_for_type(x509.DNSName))


def fetch_secret(servers: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes,
                 log: Log | None = None) -> bytes:
    """Connect to the first reachable server, present the RA-TLS certificate, check the
    server against `ca_pem` (and its name), and return the secret. PylosError otherwise."""
    from OpenSSL import SSL, crypto

    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.use_certificate(x509.load_pem_x509_certificate(cert_pem))
    context.use_privatekey(serialization.load_pem_private_key(key_pem, None))  # type: ignore[arg-type]
    store = context.get_cert_store()
    assert store is not None
    try:
        for ca in x509.load_pem_x509_certificates(ca_pem):
            store.add_cert(crypto.X509.from_cryptography(ca))
    except ValueError as exc:
        raise PylosError(f"secret provisioning CA: not PEM certificates ({exc})") from None
    context.set_verify(SSL.VERIFY_PEER, lambda _c, _x, _e, _d, ok: bool(ok))
    failures = []
    for host, port in parse_servers(servers):
        try:
            sock = socket.create_connection((host, port), timeout=IO_TIMEOUT)
        except OSError as exc:
            failures.append(f"{host}:{port}: {exc.strerror or exc}")
            continue
        _blocking_with_timeout(sock)
        conn = SSL.Connection(context, sock)
        conn.set_tlsext_host_name(host.encode())
        conn.set_connect_state()
        try:
            try:
                conn.do_handshake()
            except SSL.Error as exc:
                failures.append(f"{host}:{port}: TLS handshake failed (the server refused this "
                                f"enclave's evidence, or its certificate is not from the CA): "
                                f"{exc}")
                continue
            peer = conn.get_peer_certificate()
            if peer is None or not _hostname_matches(peer.to_cryptography(), host):
                failures.append(f"{host}:{port}: the server certificate is not for '{host}'")
                continue
            conn.sendall(REQUEST)
            header = _recv_exact(conn, len(RESPONSE) + 4)
            if len(header) == 0:
                failures.append(f"{host}:{port}: the server refused this enclave (it closed "
                                "the connection; its log says why)")
                continue
            if header[:len(RESPONSE)] != RESPONSE or len(header) != len(RESPONSE) + 4:
                failures.append(f"{host}:{port}: not a secret-provisioning response")
                continue
            (size,) = struct.unpack(">I", header[len(RESPONSE):])
            if size > MAX_SECRET:
                failures.append(f"{host}:{port}: secret of {size} bytes is too large")
                continue
            secret = _recv_exact(conn, size)
            if len(secret) != size:
                failures.append(f"{host}:{port}: the secret was cut short")
                continue
            if log is not None:
                log("debug", f"secret provisioned by {host}:{port} ({size} bytes)")
            return secret
        except SSL.Error as exc:
            failures.append(f"{host}:{port}: the server refused this enclave (TLS alert: "
                            f"{exc}; the server's log says why)")
        except OSError as exc:
            failures.append(f"{host}:{port}: {exc}")
        finally:
            with contextlib.suppress(SSL.Error, OSError):
                conn.shutdown()
            sock.close()
    raise PylosError("secret provisioning failed: " + "; ".join(failures))


def secret_from_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise PylosError(f"--secret {path}: {exc.strerror}") from None


def default_identity_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "pylos" / "secret-prov"
