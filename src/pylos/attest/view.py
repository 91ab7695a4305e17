"""Every field of a quote as plain data (what `pylos quote view` prints, like
gramine-sgx-quote-view): header, ISV report body, signature data, QE report, PCK chain."""

from __future__ import annotations

from typing import Any

from pylos.attest.quote import CERT_TYPE_NAMES, CERT_TYPE_PCK_CHAIN, Quote
from pylos.errors import InputError, about
from pylos.sgx.structs import (
    FLAG_AEX_NOTIFY,
    FLAG_DEBUG,
    FLAG_EINITTOKEN_KEY,
    FLAG_INIT,
    FLAG_KSS,
    FLAG_MODE64BIT,
    FLAG_PROVISION_KEY,
    ReportBody,
)

FLAG_NAMES = ((FLAG_INIT, "INIT"), (FLAG_DEBUG, "DEBUG"), (FLAG_MODE64BIT, "MODE64BIT"),
              (FLAG_PROVISION_KEY, "PROVISION_KEY"), (FLAG_EINITTOKEN_KEY, "EINITTOKEN_KEY"),
              (FLAG_KSS, "KSS"), (FLAG_AEX_NOTIFY, "AEX_NOTIFY"))


def flag_names(flags: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES if flags & bit]


def report_body_fields(body: ReportBody) -> dict[str, Any]:
    return {
        "cpu_svn": body.cpu_svn.hex(),
        "misc_select": f"{body.misc_select:08x}",
        "isv_ext_prod_id": body.isv_ext_prod_id.hex(),
        "attributes.flags": f"{body.attributes.flags:016x}",
        "attributes.flags_names": flag_names(body.attributes.flags),
        "attributes.xfrm": f"{body.attributes.xfrm:016x}",
        "mr_enclave": body.mr_enclave.hex(),
        "mr_signer": body.mr_signer.hex(),
        "config_id": body.config_id.hex(),
        "isv_prod_id": body.isv_prod_id,
        "isv_svn": body.isv_svn,
        "config_svn": body.config_svn,
        "isv_family_id": body.isv_family_id.hex(),
        "report_data": body.report_data.hex(),
    }


def quote_fields(quote: Quote) -> dict[str, Any]:
    """The quote as a JSON-ready dict; the PCK chain's subjects and SGX extension if type 5."""
    h = quote.header
    fields: dict[str, Any] = {
        "header": {
            "version": h.version, "att_key_type": h.att_key_type, "tee_type": h.tee_type,
            "qe_svn": h.qe_svn, "pce_svn": h.pce_svn, "qe_vendor_id": h.qe_vendor_id.hex(),
            "user_data": h.user_data.hex(),
        },
        "report_body": report_body_fields(quote.body),
        "signature_data": {
            "signature": quote.signature.hex(),
            "attestation_key": quote.attestation_key.hex(),
            "qe_report": report_body_fields(quote.qe_report),
            "qe_report_signature": quote.qe_report_signature.hex(),
            "qe_auth_data": quote.qe_auth_data.hex(),
            "certification_data_type": quote.cert_type,
            "certification_data_type_name": CERT_TYPE_NAMES.get(quote.cert_type, "unknown"),
            "certification_data_size": len(quote.cert_data),
        },
    }
    if quote.cert_type == CERT_TYPE_PCK_CHAIN:
        fields["pck_chain"] = _chain_fields(quote)
    else:
        fields["signature_data"]["certification_data"] = quote.cert_data.hex()
    return fields


def view_quote(raw: bytes, source: str | None = None) -> dict[str, Any]:
    """What `pylos quote view` shows: every field of the quote in `raw`; QuoteError naming
    `source` if it is not a quote (a malformed PCK chain is shown as an error field)."""
    from pylos.attest.verify import parse

    with about(source):
        fields = quote_fields(parse(raw))
    chain = fields.get("pck_chain", {}).get("certificates", [])
    if any("pylos SIMULATED" in c["subject"] for c in chain):
        fields["note"] = "SIMULATED quote: made by the pylos simulated platform, not SGX hardware"
    return fields


def _chain_fields(quote: Quote) -> dict[str, Any]:
    import dcap_qvl

    from pylos.attest.verify import load_chain

    try:
        certs = load_chain(quote.cert_data.rstrip(b"\0"), "PCK certificate chain")
    except InputError as exc:
        return {"error": str(exc)}
    chain: dict[str, Any] = {"certificates": [
        {"subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string(),
         "not_before": c.not_valid_before_utc.isoformat(),
         "not_after": c.not_valid_after_utc.isoformat()} for c in certs]}
    try:
        ext = dcap_qvl.parse_pck_extension_from_pem(quote.cert_data.rstrip(b"\0"))
    except ValueError as exc:
        chain["sgx_extension"] = {"error": str(exc)}
        return chain
    chain["sgx_extension"] = {
        "ppid": ext.ppid.hex(), "cpu_svn": ext.cpu_svn.hex(), "pce_svn": ext.pce_svn,
        "pce_id": ext.pce_id.hex(), "fmspc": ext.fmspc.hex(), "sgx_type": ext.sgx_type,
    }
    return chain


def format_fields(fields: dict[str, Any], indent: int = 0) -> list[str]:
    """Aligned `name : value` lines, nested sections indented."""
    lines: list[str] = []
    width = max((len(k) for k in fields), default=0)
    for key, value in fields.items():
        pad = " " * indent
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines.extend(format_fields(value, indent + 2))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for index, item in enumerate(value):
                lines.append(f"{pad}{key}[{index}]:")
                lines.extend(format_fields(item, indent + 2))
        else:
            text = ", ".join(value) if isinstance(value, list) else str(value)
            lines.append(f"{pad}{key.ljust(width)} : {text}")
    return lines
