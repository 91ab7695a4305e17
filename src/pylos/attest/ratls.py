"""RA-TLS certificates (docs/formats.md): made inside the enclave, verified anywhere.

An RA-TLS certificate is a self-signed X.509 certificate whose key was generated in the
enclave, carrying a quote whose REPORTDATA binds that key. pylos emits what Gramine ≥ 1.8
emits: an ECDSA P-384 key, the TCG DICE tagged-evidence extension (2.23.133.5.4.9, CBOR
`tag(60000)[quote, claims]`, REPORTDATA = SHA-256(claims)) and the legacy extension (OID
1.2.840.113741.1337.6 written with Gramine's quirk, REPORTDATA = SHA-256(SPKI)), each with its
own quote. Verification follows Gramine's `ra_tls_verify_callback`, with the policy taken from
the `RA_TLS_*` environment variables by default (`policy_from_env`).

pylos additions (not Gramine's): `PYLOS_RA_TLS_ALLOW_SIMULATED=1` accepts pylos *simulated*
evidence, `PYLOS_RA_TLS_COLLATERAL=FILE` supplies collateral for real quotes (there is no PCCS
here).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pylos.attest.verify import (
    CERT_ERRORS,
    Policy,
    VerificationError,
    VerifiedQuote,
    decode_certificate,
    parse,
    verify_quote,
)
from pylos.errors import InputError, PylosError, about

if TYPE_CHECKING:
    import ssl

    from pylos.attest.platform import SimulatedPlatform
    from pylos.attest.quote import Quote

TCG_EVIDENCE_OID = "2.23.133.5.4.9"
LEGACY_OID = "1.2.840.113741.1337.6"
# What standard DER parsers report for Gramine's legacy extension: Gramine writes the OID's own
# tag and length into the OID value, and emitting that spelling keeps Gramine verifiers working.
LEGACY_OID_QUIRK = "0.6.9.42.840.113741.1337.6"
CBOR_TAG_EVIDENCE = 60000
HASH_ALG_SHA256, HASH_ALG_SHA384, HASH_ALG_SHA512 = 1, 7, 8
_HASHES = {HASH_ALG_SHA256: hashlib.sha256, HASH_ALG_SHA384: hashlib.sha384,
           HASH_ALG_SHA512: hashlib.sha512}

SUBJECT = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "RATLS"),
                     x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "pylos"),
                     x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "US")])
DEFAULT_NOT_BEFORE = "20010101000000"
DEFAULT_NOT_AFTER = "20301231235959"
MEASUREMENT_VARS = ("RA_TLS_MRENCLAVE", "RA_TLS_MRSIGNER", "RA_TLS_ISV_PROD_ID", "RA_TLS_ISV_SVN")
ALLOW_SIMULATED_VAR = "PYLOS_RA_TLS_ALLOW_SIMULATED"
COLLATERAL_VAR = "PYLOS_RA_TLS_COLLATERAL"


def spki_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def claims_for(spki: bytes) -> bytes:
    """The 51-byte CBOR claims as Gramine writes them: {"pubkey-hash": bstr(CBOR
    [1 (SHA-256), bstr SHA-256(SPKI)])} (the value is the array's encoding, wrapped)."""
    import cbor2

    return cbor2.dumps({"pubkey-hash": cbor2.dumps(
        [HASH_ALG_SHA256, hashlib.sha256(spki).digest()])})


def _timestamp(env: Mapping[str, str], name: str, default: str) -> datetime.datetime:
    text = env.get(name, default)
    try:
        return datetime.datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise PylosError(f"{name}={text!r}: expected YYYYMMDDhhmmss") from None


def make_certificate(quote_for: Callable[[bytes], bytes],
                     env: Mapping[str, str] | None = None) -> tuple[bytes, bytes]:
    """A fresh P-384 key and its RA-TLS certificate, as PEM (cert, key).

    `quote_for(report_data)` is the enclave's quoting (e.g. `make_quote` with its identity).
    """
    import cbor2

    env = os.environ if env is None else env
    key = ec.generate_private_key(ec.SECP384R1())
    spki = spki_der(key.public_key())
    claims = claims_for(spki)
    tagged = cbor2.dumps(cbor2.CBORTag(CBOR_TAG_EVIDENCE, [
        quote_for(hashlib.sha256(claims).digest()), claims]))
    legacy = quote_for(hashlib.sha256(spki).digest())
    cert = (
        x509.CertificateBuilder()
        .subject_name(SUBJECT).issuer_name(SUBJECT)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(_timestamp(env, "RA_TLS_CERT_TIMESTAMP_NOT_BEFORE", DEFAULT_NOT_BEFORE))
        .not_valid_after(_timestamp(env, "RA_TLS_CERT_TIMESTAMP_NOT_AFTER", DEFAULT_NOT_AFTER))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(TCG_EVIDENCE_OID),
                                                  tagged), critical=False)
        .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(LEGACY_OID_QUIRK),
                                                  legacy), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def enclave_certificate(platform: SimulatedPlatform, identity: Any,
                        env: Mapping[str, str] | None = None) -> tuple[bytes, bytes]:
    """The RA-TLS certificate and key of the enclave `identity` on the simulated platform."""
    from pylos.attest.quote import make_quote

    return make_certificate(lambda data: make_quote(platform, identity, data), env)


@dataclass
class Evidence:
    """The quote an RA-TLS certificate carries, its binding already checked."""

    raw_quote: bytes
    quote: Quote
    extension: str  # "tcg" or "legacy"
    oid: str  # the OID as found (the legacy one may carry Gramine's quirk)
    warnings: list[str] = field(default_factory=list)


def load_certificate(data: bytes, source: str | None = None) -> x509.Certificate:
    """The certificate in `data` (PEM or DER), fully decoded; InputError naming `source`."""
    with about(source):
        try:
            # Not `in`: an RA-TLS certificate's DER carries the PCK chain's PEM text in its
            # quote.
            if data.lstrip().startswith(b"-----BEGIN"):
                cert = x509.load_pem_x509_certificate(data)
            else:
                cert = x509.load_der_x509_certificate(data)
            return decode_certificate(cert)
        except CERT_ERRORS as exc:
            raise InputError(f"not an X.509 certificate (PEM or DER): {exc}") from None


def extract_evidence(cert: x509.Certificate, source: str | None = None) -> Evidence:
    """The quote of an RA-TLS certificate, with REPORTDATA checked against the cert's key;
    VerificationError or QuoteError (exit status 1) naming `source` otherwise."""
    with about(source):
        return _extract_evidence(cert)


def _extract_evidence(cert: x509.Certificate) -> Evidence:
    import cbor2

    try:
        decode_certificate(cert)
    except CERT_ERRORS as exc:
        raise VerificationError(f"the certificate is malformed: {exc}") from None
    spki = spki_der(cert.public_key())
    found = {e.oid.dotted_string: e.value for e in cert.extensions
             if isinstance(e.value, x509.UnrecognizedExtension)}
    if TCG_EVIDENCE_OID in found:
        try:
            tagged = cbor2.loads(found[TCG_EVIDENCE_OID].value)
            if not (isinstance(tagged, cbor2.CBORTag) and tagged.tag == CBOR_TAG_EVIDENCE
                    and isinstance(tagged.value, (list, tuple)) and len(tagged.value) == 2
                    and all(isinstance(v, bytes) for v in tagged.value)):
                raise ValueError("expected tag(60000) [bstr quote, bstr claims]")
            raw, claims_bytes = tagged.value
            claims = cbor2.loads(claims_bytes)
            if not isinstance(claims, dict) or not isinstance(claims.get("pubkey-hash"), bytes):
                raise ValueError('expected claims {"pubkey-hash": bstr}')
            hashed = cbor2.loads(claims["pubkey-hash"])
            if not (isinstance(hashed, list) and len(hashed) == 2
                    and type(hashed[0]) is int and isinstance(hashed[1], bytes)):
                raise ValueError("expected pubkey-hash [int hash-alg-id, bstr hash]")
            alg, digest = hashed
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError, MemoryError,
                cbor2.CBORError) as exc:
            raise VerificationError(f"RA-TLS tagged evidence ({TCG_EVIDENCE_OID}) is "
                                    f"malformed: {exc}") from None
        if alg not in _HASHES or _HASHES[alg](spki).digest() != digest:
            raise VerificationError("RA-TLS claims: pubkey-hash is not the hash of the "
                                    "certificate's public key")
        evidence = Evidence(raw, _quote(raw, "tcg"), "tcg", TCG_EVIDENCE_OID)
        expected = hashlib.sha256(claims_bytes).digest()
    else:
        oid = next((o for o in (LEGACY_OID, LEGACY_OID_QUIRK) if o in found), None)
        if oid is None:
            raise VerificationError("not an RA-TLS certificate: it has neither the TCG "
                                    f"evidence extension ({TCG_EVIDENCE_OID}) nor the legacy "
                                    f"SGX quote extension ({LEGACY_OID})")
        raw = found[oid].value
        evidence = Evidence(raw, _quote(raw, "legacy"), "legacy", oid,
                            ["the certificate uses the deprecated legacy RA-TLS extension"])
        expected = hashlib.sha256(spki).digest()
    if evidence.quote.body.report_data[:32] != expected:
        raise VerificationError(f"the quote in the {evidence.extension} extension does not "
                                "bind the certificate's public key (REPORTDATA mismatch)")
    return evidence


def _quote(raw: bytes, extension: str) -> Quote:
    with about(f"the {extension} extension's quote"):
        if not 128 <= len(raw) <= 65535:
            raise VerificationError(f"RA-TLS quote size {len(raw)} is outside 128..65535 bytes")
        return parse(raw)


def _env_hex(env: Mapping[str, str], name: str) -> bytes | None:
    value = env[name]
    if value == "any":
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise PylosError(f"{name}={value!r}: expected 64 hexadecimal digits or 'any'")
    return raw


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    value = env[name]
    if value == "any":
        return None
    if not value.isdigit() or int(value) > 0xFFFF:
        raise PylosError(f"{name}={value!r}: expected a decimal number 0..65535 or 'any'")
    return int(value)


class PolicyMissing(PylosError):
    """No RA-TLS policy was given: a usage error (exit status 2)."""


def policy_from_env(env: Mapping[str, str] | None = None) -> Policy:
    """Gramine's RA-TLS policy: all four measurement variables required (`any` skips one),
    `RA_TLS_ALLOW_*` honoured only when exactly `1`."""
    env = os.environ if env is None else env
    for name in MEASUREMENT_VARS:
        if name not in env:
            raise PolicyMissing(f"A required environment variable {name} is not set.")
    allow = {name: env.get(f"RA_TLS_ALLOW_{name}") == "1" for name in (
        "DEBUG_ENCLAVE_INSECURE", "OUTDATED_TCB_INSECURE", "HW_CONFIG_NEEDED",
        "SW_HARDENING_NEEDED")}
    hw, sw, old = (allow["HW_CONFIG_NEEDED"], allow["SW_HARDENING_NEEDED"],
                   allow["OUTDATED_TCB_INSECURE"])
    accepted = {status for status, ok in (
        ("SWHardeningNeeded", sw), ("ConfigurationNeeded", hw),
        ("ConfigurationAndSWHardeningNeeded", hw and sw), ("OutOfDate", old),
        ("OutOfDateConfigurationNeeded", old and hw)) if ok}
    return Policy(mr_enclave=_env_hex(env, "RA_TLS_MRENCLAVE"),
                  mr_signer=_env_hex(env, "RA_TLS_MRSIGNER"),
                  isv_prod_id=_env_int(env, "RA_TLS_ISV_PROD_ID"),
                  min_isv_svn=_env_int(env, "RA_TLS_ISV_SVN"),
                  allow_debug=allow["DEBUG_ENCLAVE_INSECURE"], accept_tcb=frozenset(accepted))


@dataclass
class RatlsResult:
    evidence: Evidence
    verified: VerifiedQuote


def verify_certificate(cert: bytes | x509.Certificate, *, policy: Policy | None = None,
                       allow_simulated: bool | None = None, collateral: str | bytes | None = None,
                       now: int | None = None, platform: SimulatedPlatform | None = None,
                       env: Mapping[str, str] | None = None, source: str | None = None,
                       collateral_source: str | None = None) -> RatlsResult:
    """Verify an RA-TLS certificate (DER/PEM bytes or a cryptography certificate).

    Unset arguments come from the environment the Gramine way: `policy_from_env`,
    `PYLOS_RA_TLS_ALLOW_SIMULATED=1`, `PYLOS_RA_TLS_COLLATERAL=FILE`. VerificationError or
    InputError (exit status 1, naming `source`, the certificate's file) when it must not be
    trusted; a PylosError (2) for a bad policy/collateral setting.
    """
    env = os.environ if env is None else env
    if not isinstance(cert, x509.Certificate):
        cert = load_certificate(cert, source)
    evidence = extract_evidence(cert, source)
    if policy is None:
        policy = policy_from_env(env)
    if allow_simulated is None:
        allow_simulated = env.get(ALLOW_SIMULATED_VAR) == "1"
    if collateral is None and env.get(COLLATERAL_VAR):
        collateral_source = env[COLLATERAL_VAR]
        try:
            with open(collateral_source, "rb") as f:
                collateral = f.read()
        except OSError as exc:
            raise PylosError(f"{COLLATERAL_VAR}={collateral_source}: {exc.strerror}") \
                from None
    with about(source):
        verified = verify_quote(evidence.raw_quote, collateral=collateral, now=now,
                                allow_simulated=allow_simulated, policy=policy,
                                platform=platform, source=f"the {evidence.extension} extension's "
                                "quote", collateral_source=collateral_source)
        key = cert.public_key()
        if not (isinstance(key, ec.EllipticCurvePublicKey)
                and key.curve.name in ("secp384r1", "secp256r1")):
            raise VerificationError("RA-TLS certificate key is not EC P-384/P-256 (Gramine "
                                    "verifiers accept only those since 1.4)")
    return RatlsResult(evidence, verified)


def verify_peer(sock: ssl.SSLSocket, **kwargs: Any) -> RatlsResult:
    """After a TLS handshake made with `client_context()`: verify the server's RA-TLS
    certificate (keyword arguments as `verify_certificate`). Close the socket if this raises."""
    der = sock.getpeercert(binary_form=True)
    if der is None:
        raise VerificationError("the peer presented no certificate")
    return verify_certificate(der, **kwargs)


def client_context() -> ssl.SSLContext:
    """A client context for an RA-TLS server: the self-signed certificate cannot pass CA
    validation, so trust comes from `verify_peer` right after the handshake, before any
    application data is sent."""
    import ssl  # not at import: `pylos run` loads this module before every RA-TLS start

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def openssl_verify_callback(on_result: Callable[[RatlsResult | Exception], None] | None = None,
                            **kwargs: Any) -> Callable[..., bool]:
    """A pyOpenSSL `Context.set_verify` callback accepting a self-signed RA-TLS client
    certificate that verifies (Python's `ssl` cannot accept one). `on_result` receives the
    result or the rejection, e.g. to log why a client was refused."""

    # OpenSSL calls back once per problem it finds (a self-signed certificate: twice or more
    # at depth 0): the evidence is verified, and reported, once per handshake. Only the last
    # verdict is kept, so a later handshake (collateral may have expired since) re-verifies.
    last: list[Any] = [None, b"", False]  # connection, certificate DER, verdict

    def callback(conn: Any, cert: Any, _errno: int, depth: int, _ok: int) -> bool:
        certificate = cert.to_cryptography()
        der = certificate.public_bytes(serialization.Encoding.DER)
        if last[0] is conn and last[1] == der:
            return last[2]
        try:
            if depth != 0:
                raise VerificationError("RA-TLS certificates are self-signed: a chain was "
                                        "presented")
            result: RatlsResult | Exception = verify_certificate(certificate, **kwargs)
        except (PylosError, ValueError) as exc:
            result = exc
        last[:] = [conn, der, isinstance(result, RatlsResult)]
        if on_result is not None:
            on_result(result)
        return last[2]

    return callback
