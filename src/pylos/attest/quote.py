"""DCAP ECDSA quotes, version 3 (docs/formats.md): the structure, and simulated quoting.

`Quote.unpack` parses real and simulated quotes alike by their length fields; `make_quote` is
the simulated quoting enclave: it signs an enclave's report body with the platform's
attestation key, and vouches for that key with a QE report signed by the simulated PCK leaf,
exactly in Intel's layout so that the same verifier checks both.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pylos.attest.pki import (
    SIM_PCE_SVN,
    SIM_QE_ATTRIBUTES,
    SIM_QE_MRENCLAVE,
    SIM_QE_MRSIGNER,
    SIM_QE_PRODID,
    SIM_QE_SVN,
    raw_public_key,
    raw_signature,
)
from pylos.attest.report import with_report_data
from pylos.errors import InputError
from pylos.sgx.egetkey import SIM_CPU_SVN
from pylos.sgx.structs import Attributes, ReportBody

if TYPE_CHECKING:
    from pylos.attest.platform import SimulatedPlatform

INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
ATT_KEY_TYPE_ECDSA_P256 = 2
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_NAMES = {1: "PPID cleartext", 2: "PPID RSA-2048-OAEP", 3: "PPID RSA-3072-OAEP",
                   4: "PCK leaf certificate", 5: "PCK certificate chain",
                   6: "QE report certification data"}
SIGNED_SIZE = 432  # header + report body: what the attestation key signs
QE_AUTH_DATA = bytes(range(32))  # what Intel's QE puts there


class QuoteError(InputError):
    """The bytes are not a well-formed SGX DCAP v3 quote (a ValueError too, exit status 1)."""


@dataclass(frozen=True)
class QuoteHeader:
    version: int
    att_key_type: int
    tee_type: int  # att_key_data_0 in v3: 0 for SGX
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    FORMAT: ClassVar[struct.Struct] = struct.Struct("<HHIHH16s20s")

    def pack(self) -> bytes:
        return self.FORMAT.pack(self.version, self.att_key_type, self.tee_type, self.qe_svn,
                                self.pce_svn, self.qe_vendor_id, self.user_data)

    @classmethod
    def unpack(cls, data: bytes) -> QuoteHeader:
        return cls(*cls.FORMAT.unpack(data[:cls.FORMAT.size]))


@dataclass(frozen=True)
class Quote:
    header: QuoteHeader
    body: ReportBody
    signature: bytes  # r ‖ s over bytes [0:432]
    attestation_key: bytes  # x ‖ y
    qe_report: ReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    cert_type: int
    cert_data: bytes

    def pack(self) -> bytes:
        tail = (self.signature + self.attestation_key + self.qe_report.pack()
                + self.qe_report_signature + struct.pack("<H", len(self.qe_auth_data))
                + self.qe_auth_data + struct.pack("<HI", self.cert_type, len(self.cert_data))
                + self.cert_data)
        return self.signed_bytes() + struct.pack("<I", len(tail)) + tail

    def signed_bytes(self) -> bytes:
        return self.header.pack() + self.body.pack()

    @classmethod
    def unpack(cls, data: bytes) -> Quote:
        """Parse by the length fields (trailing bytes after the signature data are ignored)."""
        if len(data) < 436:
            raise QuoteError(f"a quote is at least 436 bytes, got {len(data)}")
        header = QuoteHeader.unpack(data)
        if header.version != 3:
            kind = {4: "v4 (SGX/TDX)", 5: "v5 (SGX/TDX)"}.get(header.version, "unknown")
            raise QuoteError(f"quote version {header.version} ({kind}): pylos reads SGX DCAP "
                             "version 3 quotes")
        if header.tee_type != 0:
            raise QuoteError(f"quote TEE type {header.tee_type:#x} is not SGX (0)")
        (sig_len,) = struct.unpack_from("<I", data, 432)
        end = 436 + sig_len
        if end > len(data) or sig_len < 64 + 64 + 384 + 64 + 2 + 6:
            raise QuoteError(f"signature_data_len {sig_len} does not fit the quote "
                             f"({len(data)} bytes)")
        pos = 436
        signature, attestation_key = data[pos:pos + 64], data[pos + 64:pos + 128]
        qe_report = ReportBody.unpack(data[pos + 128:pos + 512])
        qe_report_signature = data[pos + 512:pos + 576]
        pos += 576
        (auth_len,) = struct.unpack_from("<H", data, pos)
        pos += 2
        if pos + auth_len + 6 > end:
            raise QuoteError(f"QE auth data size {auth_len} runs past the signature data")
        auth = data[pos:pos + auth_len]
        pos += auth_len
        cert_type, cert_len = struct.unpack_from("<HI", data, pos)
        pos += 6
        if pos + cert_len > end:
            raise QuoteError(f"certification data size {cert_len} runs past the signature data")
        return cls(header, ReportBody.unpack(data[48:432]), signature, attestation_key,
                   qe_report, qe_report_signature, auth, cert_type, data[pos:pos + cert_len])

    @property
    def qe_binding(self) -> bytes:
        """What QE report.REPORTDATA[0:32] must be: SHA-256(attestation key ‖ QE auth data)."""
        return hashlib.sha256(self.attestation_key + self.qe_auth_data).digest()


def make_quote(platform: SimulatedPlatform, enclave: ReportBody, report_data: bytes) -> bytes:
    """A simulated DCAP v3 quote over `enclave`'s report body carrying `report_data`."""
    pki = platform.pki
    body = with_report_data(enclave, report_data)
    attestation_key = raw_public_key(pki.attestation_key.public_key())
    header = QuoteHeader(3, ATT_KEY_TYPE_ECDSA_P256, 0, SIM_QE_SVN, SIM_PCE_SVN,
                         INTEL_QE_VENDOR_ID,
                         hashlib.sha256(b"pylos simulated QE-ID" + platform.secret).digest()[:16]
                         + bytes(4))
    binding = hashlib.sha256(attestation_key + QE_AUTH_DATA).digest()
    qe_report = ReportBody(
        cpu_svn=SIM_CPU_SVN, attributes=Attributes.unpack(SIM_QE_ATTRIBUTES),
        mr_enclave=SIM_QE_MRENCLAVE, mr_signer=SIM_QE_MRSIGNER, isv_prod_id=SIM_QE_PRODID,
        isv_svn=SIM_QE_SVN, report_data=binding + bytes(32))
    signed = header.pack() + body.pack()
    return Quote(
        header, body, raw_signature(pki.attestation_key, signed), attestation_key, qe_report,
        raw_signature(pki.pck_key, qe_report.pack()), QE_AUTH_DATA, CERT_TYPE_PCK_CHAIN,
        pki.pck_chain_pem(),
    ).pack()
