"""Quote verification: real DCAP quotes against Intel's root, simulated ones against pylos's.

One path for both (docs/attestation.md): the quote's PCK chain names its root; a root whose
public key is Intel's SGX Root CA key (pinned here: Intel reissued the certificate with the
same key) makes a *real* quote, verified with `dcap_qvl.verify_with_root_ca` and the caller's
collateral; a root that is this installation's "pylos SIMULATED SGX Root CA" makes a
*simulated* quote, verified by the same `dcap_qvl.verify_with_root_ca` with the simulation
root and the simulated platform's collateral, and accepted only with `allow_simulated`. Any
other root is rejected. Then the policy (measurements, product, SVN, debug, TCB statuses).

`check_signatures` is the offline part (no collateral): attestation-key signature, QE
binding, QE report signature by the PCK leaf, and the PCK chain built by subject/issuer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from pylos.attest.pki import SIM_MARKER
from pylos.attest.quote import CERT_TYPE_NAMES, CERT_TYPE_PCK_CHAIN, Quote, QuoteError
from pylos.errors import InputError, PylosError, about
from pylos.sgx.structs import FLAG_DEBUG

if TYPE_CHECKING:
    from pylos.attest.platform import SimulatedPlatform

# Intel SGX Root CA public key (SEC1, P-256): both issuances (2033, 2049) carry it.
INTEL_ROOT_KEY = bytes.fromhex(
    "040ba9c4c0c0c86193a3fe23d6b02cda10a8bbd4e88e48b4458561a36e705525f567918e2edc88e40d860bd0"
    "cc4ee26aacc988e505a953558c453f6b0904ae7394")

# PCS tcbStatus values, best first; Revoked is never accepted.
TCB_STATUSES = ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                "ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded",
                "Revoked")
REJECTED_STATUSES = ("Revoked", "Unknown")


# What cryptography raises for a certificate it cannot decode: names, keys, extensions and
# the version are decoded lazily, on first use, each with its own exception.
CERT_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion,
               x509.DuplicateExtension, x509.UnsupportedGeneralNameType)
# `--now` and `now=`: what dcap-qvl (u64) and the messages (a calendar date) can take.
MAX_TIME = 253402300799  # 9999-12-31 23:59:59 UTC


class VerificationError(InputError):
    """The evidence was rejected (exit status 1, as malformed evidence; a usage error — an
    unreadable file, a bad option value — stays a plain PylosError, 2)."""


@dataclass(frozen=True)
class Policy:
    """What the verifier requires beyond valid evidence. None = not checked."""

    mr_enclave: bytes | None = None
    mr_signer: bytes | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    allow_debug: bool = False
    # TCB statuses accepted besides UpToDate; None = every status but Revoked/Unknown.
    accept_tcb: frozenset[str] | None = None
    # The 64 bytes of REPORTDATA required (what the enclave wrote to user_report_data).
    report_data: bytes | None = None


@dataclass
class Chain:
    certs: list[x509.Certificate]  # leaf first, root last
    kind: str  # "intel", "simulated" or "unknown"

    @property
    def root(self) -> x509.Certificate:
        return self.certs[-1]

    def pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.certs)


@dataclass
class VerifiedQuote:
    quote: Quote
    simulated: bool
    status: str
    advisory_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _public_key_bytes(cert: x509.Certificate) -> bytes | None:
    """The certificate's EC public key as an uncompressed point; None for any other key."""
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return None
    return key.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


def decode_certificate(cert: x509.Certificate) -> x509.Certificate:
    """`cert`, with every part the verifier and `quote view` use decoded now: cryptography
    decodes them lazily, so a malformed name, key or extension would otherwise raise (an
    exception of its own choosing) wherever it is first used."""
    cert.subject.rfc4514_string()
    cert.issuer.rfc4514_string()
    cert.subject.public_bytes()
    cert.issuer.public_bytes()
    cert.public_key()
    _ = cert.version, cert.not_valid_before_utc, cert.not_valid_after_utc, cert.extensions
    _ = cert.signature_hash_algorithm
    return cert


def load_chain(pem: bytes, what: str) -> list[x509.Certificate]:
    """The PEM certificates in `pem`, each fully decoded; InputError naming `what` and the
    certificate's position if one is malformed."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except CERT_ERRORS as exc:
        raise InputError(f"{what} does not parse: {exc}") from None
    for index, cert in enumerate(certs):
        try:
            decode_certificate(cert)
        except CERT_ERRORS as exc:
            raise InputError(f"{what}: certificate {index} of {len(certs)} is malformed: "
                             f"{exc}") from None
    return certs


def _verify_raw(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                               int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def pck_chain(quote: Quote) -> Chain:
    """The type-5 PCK chain ordered leaf → root by subject/issuer (never by position), every
    link's signature checked."""
    if quote.cert_type != CERT_TYPE_PCK_CHAIN:
        name = CERT_TYPE_NAMES.get(quote.cert_type, "unknown")
        raise VerificationError(
            f"certification data type {quote.cert_type} ({name}) carries no PCK certificate "
            "chain to check; pylos verifies type 5 (PCK certificate chain) quotes")
    try:
        certs = load_chain(quote.cert_data.rstrip(b"\0"), "the quote's PCK certificate chain")
    except InputError as exc:
        raise VerificationError(str(exc)) from None
    issuers = {c.subject.public_bytes(): c for c in certs}
    subjects_issued = {c.issuer.public_bytes() for c in certs if c.issuer != c.subject}
    leaves = [c for c in certs if c.subject.public_bytes() not in subjects_issued]
    if len(leaves) != 1:
        raise VerificationError(f"the quote's PCK chain has {len(leaves)} leaf certificates, "
                                "expected one")
    chain = [leaves[0]]
    while chain[-1].issuer != chain[-1].subject:
        issuer = issuers.get(chain[-1].issuer.public_bytes())
        if issuer is None or len(chain) > len(certs):
            raise VerificationError(f"the quote's PCK chain is incomplete: no certificate for "
                                    f"'{chain[-1].issuer.rfc4514_string()}'")
        chain.append(issuer)
    for cert, issuer in zip(chain, chain[1:] + chain[-1:], strict=True):
        try:
            cert.verify_directly_issued_by(issuer)
        except (*CERT_ERRORS, InvalidSignature):
            raise VerificationError(f"PCK chain: the signature on "
                                    f"'{cert.subject.rfc4514_string()}' does not verify with "
                                    f"its issuer's key") from None
    root = chain[-1]
    if _public_key_bytes(root) == INTEL_ROOT_KEY:
        kind = "intel"
    elif any(SIM_MARKER in a.value for a in root.subject if isinstance(a.value, str)):
        kind = "simulated"
    else:
        kind = "unknown"
    return Chain(chain, kind)


def check_signatures(quote: Quote) -> Chain:
    """Every signature inside the quote (docs/attestation.md, verification step 2);
    VerificationError on the first bad."""
    chain = pck_chain(quote)
    if quote.header.att_key_type != 2:
        raise VerificationError(f"attestation key type {quote.header.att_key_type} is not "
                                "ECDSA P-256 (2)")
    leaf_key = chain.certs[0].public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey):
        raise VerificationError("the PCK leaf certificate's key is not an EC key")
    if not _verify_raw(leaf_key, quote.qe_report_signature, quote.qe_report.pack()):
        raise VerificationError("the QE report signature does not verify with the PCK leaf key")
    if quote.qe_report.report_data[:32] != quote.qe_binding:
        raise VerificationError("the QE report does not bind the attestation key "
                                "(REPORTDATA != SHA-256(attestation key ‖ QE auth data))")
    try:
        att_key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b"\x04" + quote.attestation_key)
    except ValueError:
        raise VerificationError("the attestation key is not a P-256 point") from None
    if not _verify_raw(att_key, quote.signature, quote.signed_bytes()):
        raise VerificationError("the quote signature (ISV enclave report) does not verify with "
                                "the attestation key")
    return chain


def parse(raw: bytes, source: str | None = None) -> Quote:
    """The quote in `raw`; QuoteError (exit status 1) naming `source` if it is not one."""
    with about(source):
        try:
            return Quote.unpack(raw)
        except QuoteError as exc:
            raise QuoteError(f"not an SGX DCAP v3 quote: {exc}") from None


def parse_collateral(text: str | bytes, source: str | None = None) -> object:
    """dcap-qvl's QuoteCollateralV3 from its JSON; InputError naming `source` otherwise."""
    import dcap_qvl

    with about(source, file=True):
        try:
            if isinstance(text, bytes):
                text = text.decode()
            return dcap_qvl.QuoteCollateralV3.from_json(text)
        except (ValueError, TypeError, KeyError) as exc:  # UnicodeDecodeError is a ValueError
            raise InputError(f"not QuoteCollateralV3 JSON (the layout of dcap-qvl's "
                             f"QuoteCollateralV3.from_json): {exc}") from None


def check_time(now: int | None) -> int:
    """`now`, or the clock; a PylosError (a usage error) outside 0 .. 9999-12-31."""
    if now is None:
        return int(time.time())
    if not 0 <= now <= MAX_TIME:
        raise PylosError(f"verification time {now} is outside 0 .. {MAX_TIME} (unix seconds)")
    return now


def verify_quote(raw: bytes, *, collateral: str | bytes | None = None, now: int | None = None,
                 allow_simulated: bool = False, policy: Policy | None = None,
                 platform: SimulatedPlatform | None = None, source: str | None = None,
                 collateral_source: str | None = None) -> VerifiedQuote:
    """Full DCAP verification of `raw` at `now` (default: the clock), then `policy`.

    VerificationError (exit status 1) when the quote must not be trusted, QuoteError or
    InputError (1) when it or the collateral is malformed, each naming `source` (the quote's
    file) or `collateral_source`."""
    now = check_time(now)
    with about(source):
        return _verify_quote(raw, collateral, now, allow_simulated, policy, platform,
                             collateral_source)


def _verify_quote(raw: bytes, collateral: str | bytes | None, now: int, allow_simulated: bool,
                  policy: Policy | None, platform: SimulatedPlatform | None,
                  collateral_source: str | None) -> VerifiedQuote:
    import dcap_qvl

    quote = parse(raw)
    chain = check_signatures(quote)
    if chain.kind == "unknown":
        debug = " It is also a DEBUG enclave." if quote.body.attributes.debug else ""
        raise VerificationError(
            f"the PCK chain ends at '{chain.root.subject.rfc4514_string()}', whose key is not "
            "the production Intel SGX Root CA key (nor a pylos simulation root): not "
            f"production evidence.{debug}")
    simulated = chain.kind == "simulated"
    if simulated:
        if not allow_simulated:
            raise VerificationError("this is a pylos SIMULATED quote (no SGX hardware vouches "
                                    "for it); accept it only for testing, with "
                                    "--allow-simulated / allow_simulated=True")
        from pylos.attest.platform import SimulatedPlatform

        platform = platform or SimulatedPlatform()
        root_der = platform.pki.root_der()
        if chain.root.public_bytes(serialization.Encoding.DER) != root_der:
            raise VerificationError("this simulated quote comes from another pylos "
                                    "installation's simulated platform (its simulation root is "
                                    f"not the one in {platform.root})")
        if collateral is None:
            collateral = platform.collateral(now)
    else:
        root_der = chain.root.public_bytes(serialization.Encoding.DER)
        if collateral is None:
            raise VerificationError("a real quote needs its collateral (TCB info, QE identity, "
                                    "CRLs) to be verified: pass --collateral FILE (the JSON "
                                    "layout of dcap-qvl's QuoteCollateralV3)")
    if collateral_source is None:
        with about("collateral"):
            collateral_obj = parse_collateral(collateral)
    else:
        collateral_obj = parse_collateral(collateral, collateral_source)
    if isinstance(collateral, bytes):
        collateral = collateral.decode()
    notes: list[str] = []
    debug = bool(quote.body.attributes.flags & FLAG_DEBUG)
    try:
        report = dcap_qvl.verify_with_root_ca(raw, collateral_obj, root_der, now)
        status, advisories = report.status, list(report.advisory_ids)
    except ValueError as exc:
        message = str(exc)
        if debug and "Debug mode is enabled" in message and policy and policy.allow_debug:
            # dcap-qvl refuses DEBUG enclaves only after every other check has passed; the
            # TCB level is then matched here, the way dcap-qvl matches it.
            status, advisories = tcb_level(chain, collateral)
            notes.append("DEBUG enclave accepted (--allow-debug): its memory is not protected")
        else:
            with_file = f" (collateral: {collateral_source})" if collateral_source else ""
            raise VerificationError(explain(message, now) + with_file) from None
    result = VerifiedQuote(quote, simulated, status, advisories, notes)
    apply_policy(result, policy or Policy())
    return result


def explain(message: str, now: int) -> str:
    """dcap-qvl's error, with the reason spelled out where it is terse."""
    text = message.replace("Verification failed: ", "").replace("\n\nCaused by:\n   ", ":")
    if "Expired" in text or "expired" in text:
        return (f"expired collateral at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(now))}"
                f" (fetch fresh collateral, or verify at a time inside its validity window with "
                f"--now): {text}")
    if "Debug mode" in text:
        return "the enclave is a DEBUG enclave (its memory can be read by the host); pass " \
               "--allow-debug / Policy(allow_debug=True) to accept it anyway"
    return f"quote verification failed: {text}"


def tcb_level(chain: Chain, collateral: str) -> tuple[str, list[str]]:
    """The platform TCB level of the quote with PCK `chain` under `collateral`
    (docs/formats.md: TCB levels). dcap-qvl has checked the collateral's signatures, so a
    layout error here is a disagreement with dcap-qvl about it, reported as a rejection."""
    import json

    import dcap_qvl

    try:
        ext = dcap_qvl.parse_pck_extension_from_pem(chain.pem())
        info = json.loads(collateral)
        for level in json.loads(info["tcb_info"])["tcbLevels"]:
            components = [c["svn"] for c in level["tcb"]["sgxtcbcomponents"]]
            if ext.pce_svn >= level["tcb"]["pcesvn"] and all(
                    a >= b for a, b in zip(ext.cpu_svn, components, strict=False)):
                return level["tcbStatus"], list(level.get("advisoryIDs", []))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise VerificationError(f"cannot match the TCB level: the collateral's TCB info or the "
                                f"PCK certificate's SGX extension is not as expected ({exc!r})"
                                ) from None
    return "Unknown", []


def apply_policy(result: VerifiedQuote, policy: Policy) -> None:
    body = result.quote.body
    if result.status in REJECTED_STATUSES:
        raise VerificationError(f"TCB status {result.status}: the platform must not be trusted")
    if policy.accept_tcb is not None and result.status != "UpToDate" \
            and result.status not in policy.accept_tcb:
        raise VerificationError(f"TCB status {result.status} is not accepted (advisories: "
                                f"{', '.join(result.advisory_ids) or 'none'})")
    if body.attributes.flags & FLAG_DEBUG and not policy.allow_debug:
        raise VerificationError(explain("Debug mode", 0))
    checks = (("MRENCLAVE", policy.mr_enclave, body.mr_enclave),
              ("MRSIGNER", policy.mr_signer, body.mr_signer))
    for name, wanted, got in checks:
        if wanted is not None and wanted != got:
            raise VerificationError(f"{name} {got.hex()} is not the expected {wanted.hex()}")
    if policy.isv_prod_id is not None and body.isv_prod_id != policy.isv_prod_id:
        raise VerificationError(f"ISVPRODID {body.isv_prod_id} is not the expected "
                                f"{policy.isv_prod_id}")
    if policy.min_isv_svn is not None and body.isv_svn < policy.min_isv_svn:
        raise VerificationError(f"ISVSVN {body.isv_svn} is below the required minimum "
                                f"{policy.min_isv_svn}")
    if policy.report_data is not None and body.report_data != policy.report_data:
        raise VerificationError(f"REPORTDATA {body.report_data.hex()} is not the expected "
                                f"{policy.report_data.hex()}")
