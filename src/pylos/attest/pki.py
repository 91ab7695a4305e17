"""The simulated Intel provisioning: a PCK certificate chain and DCAP collateral (docs/formats.md).

Real SGX platforms get a PCK certificate (with the SGX extension: FMSPC, TCB SVNs, PCE-ID)
from Intel, chained leaf → "Intel SGX PCK Processor CA" → "Intel SGX Root CA"; verifiers fetch
collateral (TCB info, QE identity, CRLs) signed under the same root. pylos mirrors that layout
exactly, but under its own root, **"pylos SIMULATED SGX Root CA — NOT INTEL"**, so that a
simulated quote goes through the very same verifier (`dcap_qvl.verify_with_root_ca`) as a real
one, and can never chain to Intel's root.

Everything is ECDSA P-256 / SHA-256 like Intel's PKI. Certificates carry no extended key usage
(dcap-qvl's webpki checks `serverAuth` only when an EKU is present) and every CA has CRLs
(dcap-qvl denies certificates whose revocation status is unknown).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from pylos.sgx.egetkey import SIM_CPU_SVN

SIM_ROOT_CN = "pylos SIMULATED SGX Root CA — NOT INTEL"
SIM_ORG = "pylos simulation (not Intel Corporation)"
SIM_MARKER = "pylos SIMULATED"  # in every simulated certificate's CN

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"

# The simulated platform's TCB as its PCK certificate states it (CPUSVN = `SIM_CPU_SVN`).
SIM_FMSPC = bytes.fromhex("00906ED50000")
SIM_PCE_ID = bytes(2)
SIM_PCE_SVN = 13
SIM_QE_SVN = 8
# The simulated quoting enclave's identity (what its QE identity collateral pins).
SIM_QE_MRSIGNER = hashlib.sha256(b"pylos simulated quoting enclave signer").digest()
SIM_QE_MRENCLAVE = hashlib.sha256(b"pylos simulated quoting enclave").digest()
SIM_QE_PRODID = 1
SIM_QE_ATTRIBUTES = bytes.fromhex("1100000000000000e700000000000000")  # INIT|PROVISION_KEY
COLLATERAL_LIFETIME = datetime.timedelta(days=30)

_CERT_NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
_CERT_NOT_AFTER = datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


# --- a few DER primitives for the SGX extension (cryptography has no generic DER writer) ---

def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, bytes(body))


def _int(value: int, tag: int = 0x02) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return _der(tag, raw)


def _seq(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


def _entry(oid: str, value: bytes) -> bytes:
    return _seq(_oid(oid), value)


def sgx_extension(ppid: bytes, cpu_svn: bytes, pce_svn: int, pce_id: bytes,
                  fmspc: bytes) -> bytes:
    """The PCK certificate's SGX extension value (Intel's PCK certificate profile)."""
    base = SGX_EXTENSION_OID
    tcb = [_entry(f"{base}.2.{i + 1}", _int(svn)) for i, svn in enumerate(cpu_svn)]
    tcb.append(_entry(f"{base}.2.17", _int(pce_svn)))
    tcb.append(_entry(f"{base}.2.18", _der(0x04, cpu_svn)))
    return _seq(
        _entry(f"{base}.1", _der(0x04, ppid)),
        _entry(f"{base}.2", _seq(*tcb)),
        _entry(f"{base}.3", _der(0x04, pce_id)),
        _entry(f"{base}.4", _der(0x04, fmspc)),
        _entry(f"{base}.5", _int(0, tag=0x0A)),  # SGX type: Standard
    )


# --- the simulated PKI ---------------------------------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, SIM_ORG)])


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
                 issuer_key: ec.EllipticCurvePrivateKey, ca: bool,
                 extra: list[x509.ExtensionType] | None = None) -> x509.Certificate:
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_CERT_NOT_BEFORE)
        .not_valid_after(_CERT_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                       critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=not ca, content_commitment=not ca, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
    )
    for ext in extra or []:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def make_pki(ppid: bytes) -> bytes:
    """A fresh simulated provisioning (the platform store's `sim-pki.json`): keys and certs."""
    root_key, ca_key, pck_key, tcb_key, att_key = (_new_key() for _ in range(5))
    root = _certificate(SIM_ROOT_CN, root_key, None, root_key, True)
    ca = _certificate("pylos SIMULATED SGX PCK Processor CA", ca_key, root, root_key, True)
    tcb = _certificate("pylos SIMULATED SGX TCB Signing", tcb_key, root, root_key, False)
    extension = x509.UnrecognizedExtension(
        x509.ObjectIdentifier(SGX_EXTENSION_OID),
        sgx_extension(ppid, SIM_CPU_SVN, SIM_PCE_SVN, SIM_PCE_ID, SIM_FMSPC))
    pck = _certificate("pylos SIMULATED SGX PCK Certificate", pck_key, ca, ca_key, False,
                       [extension])
    return json.dumps({
        "warning": "pylos SIMULATED SGX provisioning: not Intel, not hardware-backed",
        "root_cert": _pem(root), "root_key": _key_pem(root_key),
        "ca_cert": _pem(ca), "ca_key": _key_pem(ca_key),
        "pck_cert": _pem(pck), "pck_key": _key_pem(pck_key),
        "tcb_cert": _pem(tcb), "tcb_key": _key_pem(tcb_key),
        "attestation_key": _key_pem(att_key),
    }, indent=1).encode()


@dataclass
class SimulatedPki:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    pck: x509.Certificate
    pck_key: ec.EllipticCurvePrivateKey
    tcb: x509.Certificate
    tcb_key: ec.EllipticCurvePrivateKey
    attestation_key: ec.EllipticCurvePrivateKey

    @classmethod
    def loads(cls, data: bytes) -> SimulatedPki:
        d = json.loads(data)

        def cert(name: str) -> x509.Certificate:
            return x509.load_pem_x509_certificate(d[name].encode())

        def key(name: str) -> ec.EllipticCurvePrivateKey:
            loaded = serialization.load_pem_private_key(d[name].encode(), None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{name} is not an EC key")
            return loaded

        return cls(cert("root_cert"), key("root_key"), cert("ca_cert"), key("ca_key"),
                   cert("pck_cert"), key("pck_key"), cert("tcb_cert"), key("tcb_key"),
                   key("attestation_key"))

    def pck_chain_pem(self) -> bytes:
        """Certification data type 5: leaf ‖ intermediate ‖ root, NUL-terminated like Intel's."""
        return (_pem(self.pck) + _pem(self.ca) + _pem(self.root)).encode() + b"\0"

    def root_der(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.DER)

    def collateral(self, now: datetime.datetime) -> str:
        """Collateral valid from a day before `now` for `COLLATERAL_LIFETIME`, in the JSON
        layout of `dcap_qvl.QuoteCollateralV3.from_json`."""
        issue = (now - datetime.timedelta(days=1)).replace(microsecond=0)
        next_update = issue + COLLATERAL_LIFETIME
        tcb_info = json.dumps({
            "id": "SGX", "version": 3, "issueDate": stamp(issue),
            "nextUpdate": stamp(next_update), "fmspc": SIM_FMSPC.hex().upper(),
            "pceId": SIM_PCE_ID.hex().upper(), "tcbType": 0, "tcbEvaluationDataNumber": 1,
            "tcbLevels": [{
                "tcb": {"sgxtcbcomponents": [{"svn": s} for s in SIM_CPU_SVN],
                        "pcesvn": SIM_PCE_SVN},
                "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": "UpToDate", "advisoryIDs": [],
            }, {
                "tcb": {"sgxtcbcomponents": [{"svn": 0}] * 16, "pcesvn": 0},
                "tcbDate": "2023-01-01T00:00:00Z", "tcbStatus": "OutOfDate",
                "advisoryIDs": ["PYLOS-SIMULATED-OUTDATED"],
            }],
        }, separators=(",", ":"))
        qe_identity = json.dumps({
            "id": "QE", "version": 2, "issueDate": stamp(issue), "nextUpdate": stamp(next_update),
            "tcbEvaluationDataNumber": 1, "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
            "attributes": SIM_QE_ATTRIBUTES.hex().upper(),
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": SIM_QE_MRSIGNER.hex().upper(), "isvprodid": SIM_QE_PRODID,
            "tcbLevels": [{"tcb": {"isvsvn": SIM_QE_SVN}, "tcbDate": "2024-01-01T00:00:00Z",
                           "tcbStatus": "UpToDate"}],
        }, separators=(",", ":"))
        issuer_chain = _pem(self.tcb) + _pem(self.root)
        return json.dumps({
            "pck_crl_issuer_chain": _pem(self.ca) + _pem(self.root),
            "root_ca_crl": self._crl(self.root, self.root_key, issue, next_update).hex(),
            "pck_crl": self._crl(self.ca, self.ca_key, issue, next_update).hex(),
            "tcb_info_issuer_chain": issuer_chain,
            "tcb_info": tcb_info,
            "tcb_info_signature": raw_signature(self.tcb_key, tcb_info.encode()).hex(),
            "qe_identity_issuer_chain": issuer_chain,
            "qe_identity": qe_identity,
            "qe_identity_signature": raw_signature(self.tcb_key, qe_identity.encode()).hex(),
        })

    @staticmethod
    def _crl(issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey,
             this_update: datetime.datetime, next_update: datetime.datetime) -> bytes:
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.subject)
            .last_update(this_update)
            .next_update(next_update)
            .add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return crl.public_bytes(serialization.Encoding.DER)


def stamp(moment: datetime.datetime) -> str:
    """PCS time format."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-SHA256 as SGX stores it: r ‖ s, 32 bytes each, big-endian."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_public_key(key: ec.EllipticCurvePublicKey) -> bytes:
    """A P-256 public key as SGX stores it: x ‖ y (64 bytes, no SEC1 prefix)."""
    return key.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)[1:]
