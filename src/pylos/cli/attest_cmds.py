"""`pylos quote view|verify`, `pylos ratls verify`, `pylos secret-prov serve`: attestation
evidence, checked the same way for real (Intel) and simulated (pylos) quotes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pylos.errors import InputError, PylosError, about

if TYPE_CHECKING:
    from pylos.attest.verify import Policy

MAX_TIME = 253402300799  # 9999-12-31 23:59:59 UTC: what dcap-qvl and the messages take
TCB_CHOICES = ("SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
               "OutOfDate", "OutOfDateConfigurationNeeded")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PylosError(f"cannot read {what} '{path}': {exc.strerror}") from None


def _hex32(value: str | None, option: str) -> bytes | None:
    if value is None:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise PylosError(f"{option} {value!r}: expected 64 hexadecimal digits")
    return raw


def policy_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The verification options shared by every command that judges evidence."""
    options = [
        click.option("--collateral", type=click.Path(dir_okay=False, path_type=Path),
                     help="QuoteCollateralV3 JSON (dcap-qvl layout) for a real quote."),
        click.option("--now", type=click.IntRange(0, MAX_TIME), metavar="UNIX",
                     help="Verify as of this time."),
        click.option("--allow-simulated", is_flag=True,
                     help="Accept pylos SIMULATED evidence (testing only)."),
        click.option("--mrenclave", metavar="HEX", help="Required MRENCLAVE."),
        click.option("--mrsigner", metavar="HEX", help="Required MRSIGNER."),
        click.option("--isv-prodid", "--isvprodid", "isvprodid", type=click.IntRange(0, 0xFFFF),
                     help="Required ISVPRODID."),
        click.option("--isv-svn", "--min-isvsvn", "min_isvsvn", type=click.IntRange(0, 0xFFFF),
                     help="Minimum ISVSVN (as Gramine's RA_TLS_ISV_SVN)."),
        click.option("--report-data", metavar="HEX",
                     help="Required REPORTDATA: up to 64 bytes in hex, zero-padded to 64."),
        click.option("--report-data-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Required REPORTDATA: the file's bytes (up to 64), zero-padded."),
        click.option("--allow-debug", is_flag=True, help="Accept DEBUG enclaves (insecure)."),
        click.option("--accept-tcb", multiple=True, type=click.Choice(TCB_CHOICES),
                     help="Accept this TCB status besides UpToDate (repeatable); without it "
                          "every status but Revoked is accepted and printed."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _policy(kw: dict[str, Any]) -> Any:
    from pylos.attest.verify import Policy

    return Policy(mr_enclave=_hex32(kw["mrenclave"], "--mrenclave"),
                  mr_signer=_hex32(kw["mrsigner"], "--mrsigner"), isv_prod_id=kw["isvprodid"],
                  min_isv_svn=kw["min_isvsvn"], allow_debug=kw["allow_debug"],
                  accept_tcb=frozenset(kw["accept_tcb"]) if kw["accept_tcb"] else None,
                  report_data=_report_data(kw))


def _report_data(kw: dict[str, Any]) -> bytes | None:
    """The REPORTDATA the options require: 64 bytes, the given ones zero-padded."""
    if kw["report_data"] is not None and kw["report_data_file"] is not None:
        raise PylosError("give --report-data or --report-data-file, not both")
    if kw["report_data_file"] is not None:
        raw, what = _read(kw["report_data_file"], "report data"), "--report-data-file"
    elif kw["report_data"] is not None:
        what = f"--report-data {kw['report_data']!r}"
        try:
            raw = bytes.fromhex(kw["report_data"])
        except ValueError:
            raise PylosError(f"{what}: expected hexadecimal digits") from None
    else:
        return None
    if len(raw) > 64:
        raise PylosError(f"{what}: {len(raw)} bytes, REPORTDATA has 64")
    return raw.ljust(64, b"\0")


POLICY_KEYS = ("mrenclave", "mrsigner", "isvprodid", "min_isvsvn", "allow_debug", "accept_tcb",
               "report_data", "report_data_file")


def _policy_given(kw: dict[str, Any]) -> bool:
    # `is`, not `in`: --isv-prodid 0 is a policy, and 0 == False.
    return any(kw[k] is not None and kw[k] is not False and kw[k] != () for k in POLICY_KEYS)


def _collateral(kw: dict[str, Any]) -> bytes | None:
    path = kw["collateral"]
    return None if path is None else _read(path, "collateral")


def _collateral_source(kw: dict[str, Any]) -> str | None:
    return None if kw["collateral"] is None else str(kw["collateral"])


def verdict_fields(verified: Any) -> dict[str, Any]:
    """The verdict as data (`--json`)."""
    body = verified.quote.body
    return {"verified": True, "simulated": verified.simulated, "tcb_status": verified.status,
            "advisory_ids": list(verified.advisory_ids), "mr_enclave": body.mr_enclave.hex(),
            "mr_signer": body.mr_signer.hex(), "isv_prod_id": body.isv_prod_id,
            "isv_svn": body.isv_svn, "debug": bool(body.attributes.debug),
            "report_data": body.report_data.hex(), "notes": list(verified.notes)}


def _print_verdict(verified: Any, as_json: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(verdict_fields(verified), indent=2))
        return
    body = verified.quote.body
    kind = ("SIMULATED (pylos simulated platform — not SGX hardware, not Intel-attested)"
            if verified.simulated else "real SGX (Intel SGX Root CA)")
    click.echo(f"Quote verified: {kind}")
    click.echo(f"TCB status   : {verified.status}")
    click.echo(f"Advisories   : {', '.join(verified.advisory_ids) or 'none'}")
    click.echo(f"MRENCLAVE    : {body.mr_enclave.hex()}")
    click.echo(f"MRSIGNER     : {body.mr_signer.hex()}")
    click.echo(f"ISVPRODID    : {body.isv_prod_id}")
    click.echo(f"ISVSVN       : {body.isv_svn}")
    click.echo(f"DEBUG        : {'yes' if body.attributes.debug else 'no'}")
    click.echo(f"REPORTDATA   : {body.report_data.hex()}")
    for note in verified.notes:
        click.echo(f"Note         : {note}")


@click.group("quote")
def quote_group() -> None:
    """Inspect and verify SGX DCAP quotes (real or pylos-simulated)."""


@quote_group.command("view")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the fields as JSON.")
def quote_view_cmd(file: Path, as_json: bool) -> None:
    """Print every field of the quote in FILE (like gramine-sgx-quote-view).

    Exit status: 0 shown (a malformed PCK chain is shown as an error field), 1 not a DCAP v3
    quote, 2 usage error (unreadable file)."""
    from pylos.attest.view import format_fields, view_quote

    fields = view_quote(_read(file, "quote"), str(file))
    if as_json:
        click.echo(json.dumps(fields, indent=2))
    else:
        click.echo("\n".join(format_fields(fields)))


@quote_group.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@policy_options
@click.option("--offline", is_flag=True,
              help="Only check the quote's own signatures and PCK chain (no collateral, no TCB).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the verdict as JSON (rejected: verified false, with the error).")
def quote_verify_cmd(file: Path, offline: bool, as_json: bool, **kw: Any) -> None:
    """Verify the quote in FILE: signatures, PCK chain, collateral, TCB status, policy.

    Exit status: 0 verified, 1 rejected (malformed, or not to be trusted; one ERROR: line says
    why), 2 usage error (bad option value, unreadable file)."""
    from pylos.attest.verify import VerificationError, check_signatures, parse, verify_quote

    raw = _read(file, "quote")
    if offline:
        with about(str(file)):
            chain = check_signatures(parse(raw))
            click.echo(f"Signatures and PCK chain verify (root: "
                       f"{chain.root.subject.rfc4514_string()}"
                       + (", SIMULATED" if chain.kind == "simulated" else "")
                       + "); TCB not evaluated without collateral")
            if chain.kind == "unknown":
                raise VerificationError("the chain's root is neither the Intel SGX Root CA key "
                                        "nor a pylos simulation root")
        return
    policy, collateral = _policy(kw), _collateral(kw)
    try:
        verified = verify_quote(raw, collateral=collateral, now=kw["now"],
                                allow_simulated=kw["allow_simulated"], policy=policy,
                                source=str(file), collateral_source=_collateral_source(kw))
    except InputError as exc:
        if not as_json:
            raise
        click.echo(json.dumps({"verified": False, "error": str(exc)}, indent=2))
        sys.exit(exc.exit_code)
    _print_verdict(verified, as_json)


@click.group("ratls")
def ratls_group() -> None:
    """RA-TLS certificates."""


@ratls_group.command("verify")
@click.argument("cert", type=click.Path(dir_okay=False, path_type=Path))
@policy_options
def ratls_verify_cmd(cert: Path, **kw: Any) -> None:
    """Verify the RA-TLS certificate CERT (PEM or DER).

    Without policy options the RA_TLS_* environment variables apply, as in Gramine (all four of
    RA_TLS_MRENCLAVE, RA_TLS_MRSIGNER, RA_TLS_ISV_PROD_ID, RA_TLS_ISV_SVN required; `any`
    skips one).

    Exit status: 0 verified, 1 rejected (malformed, or not to be trusted; one ERROR: line says
    why), 2 usage error (bad option or RA_TLS_* value, unreadable file)."""
    from pylos.attest.ratls import extract_evidence, load_certificate, verify_certificate

    policy = _ratls_policy(kw)  # usage errors first
    collateral = _collateral(kw)
    certificate = load_certificate(_read(cert, "certificate"), str(cert))
    evidence = extract_evidence(certificate, str(cert))
    body = evidence.quote.body
    click.echo(f"Evidence     : {evidence.extension} extension (OID {evidence.oid})")
    click.echo(f"MRENCLAVE    : {body.mr_enclave.hex()}")
    click.echo(f"MRSIGNER     : {body.mr_signer.hex()}")
    for warning in evidence.warnings:
        click.echo(f"warning: {warning}", err=True)
    result = verify_certificate(
        certificate, policy=policy, allow_simulated=True if kw["allow_simulated"] else None,
        collateral=collateral, now=kw["now"], source=str(cert),
        collateral_source=_collateral_source(kw))
    _print_verdict(result.verified)


def _ratls_policy(kw: dict[str, Any]) -> Policy:
    """The policy from the options or, without any, from Gramine's RA_TLS_* variables."""
    from pylos.attest.ratls import PolicyMissing, policy_from_env

    try:
        return _policy(kw) if _policy_given(kw) else policy_from_env()
    except PolicyMissing as exc:
        raise PylosError(f"{exc} Give the policy as options (--mrenclave HEX, --mrsigner HEX, "
                         "--isv-prodid N, --isv-svn N, --report-data HEX; --allow-simulated for "
                         "pylos evidence) or set RA_TLS_MRENCLAVE, RA_TLS_MRSIGNER, "
                         "RA_TLS_ISV_PROD_ID and RA_TLS_ISV_SVN (`any` skips one), as in "
                         "Gramine.") from None


@ratls_group.command("connect")
@click.argument("address", metavar="HOST:PORT")
@policy_options
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path),
              help="Also require the server's certificate to chain to this CA (PEM), with "
                   "its name checked (for RA-TLS servers whose certificate a CA issued).")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              help="Seconds to connect and finish the handshake.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def ratls_connect_cmd(address: str, ca: Path | None, timeout: float, as_json: bool,
                      **kw: Any) -> None:
    """Connect to an RA-TLS server at HOST:PORT and verify the quote in its certificate.

    The policy is given as options or, without them, by Gramine's RA_TLS_* environment
    variables (as `ratls verify`). Nothing is sent to the server.

    Exit status: 0 verified, 1 rejected or unreachable (one ERROR: line says why), 2 usage
    error (bad HOST:PORT, option or RA_TLS_* value, unreadable CA file)."""
    import socket
    import ssl

    from pylos.attest.ratls import client_context, verify_peer

    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise PylosError(f"{address!r}: expected HOST:PORT (e.g. localhost:4433)")
    policy = _ratls_policy(kw)
    context = client_context()
    if ca is not None:
        _read(ca, "CA certificate")
        try:
            context.load_verify_locations(cafile=str(ca))
        except ssl.SSLError as exc:
            raise PylosError(f"'{ca}': not a PEM CA certificate ({exc.reason})") from None
        context.check_hostname, context.verify_mode = True, ssl.CERT_REQUIRED
    where = f"{host}:{port_text}"
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout) \
                as raw, context.wrap_socket(raw, server_hostname=host.strip("[]")) as tls:
            result = verify_peer(tls, policy=policy, allow_simulated=kw["allow_simulated"],
                                 collateral=_collateral(kw), now=kw["now"], source=where,
                                 collateral_source=_collateral_source(kw))
    except ssl.SSLCertVerificationError as exc:
        raise InputError(f"{where}: the server's certificate does not chain to '{ca}' "
                         f"({exc.verify_message})") from None
    except (OSError, ssl.SSLError) as exc:
        detail = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
        raise InputError(f"{where}: cannot connect: {detail}") from None
    if not as_json:
        click.echo(f"Connected to {where}: {result.evidence.extension} evidence")
    _print_verdict(result.verified, as_json)


@click.group("secret-prov")
def secret_prov_group() -> None:
    """Secret provisioning to attested enclaves (Gramine's protocol)."""


@secret_prov_group.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=4433, show_default=True)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--secret", "secret_file", type=click.Path(dir_okay=False, path_type=Path),
              help="File whose bytes are the secret.")
@click.option("--secret-string", help="The secret, given as a string.")
@click.option("--cert", type=click.Path(dir_okay=False, path_type=Path),
              help="Server certificate (PEM chain) [default: generated, see --identity-dir].")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path),
              help="Server private key (PEM).")
@click.option("--identity-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the generated local CA and server certificate live "
                   "[default: ~/.local/share/pylos/secret-prov].")
@click.option("--hostname", "hostnames", multiple=True,
              help="Names the generated server certificate is for [default: localhost, "
                   "127.0.0.1].")
@policy_options
def secret_prov_serve_cmd(port: int, host: str, secret_file: Path | None,
                          secret_string: str | None, cert: Path | None, key: Path | None,
                          identity_dir: Path | None, hostnames: tuple[str, ...],
                          **kw: Any) -> None:
    """Send a secret to each enclave whose RA-TLS evidence passes the policy.

    Without policy options the RA_TLS_* environment variables apply, as in Gramine."""
    from pylos.attest import secret_prov
    from pylos.attest.ratls import policy_from_env

    if (secret_file is None) == (secret_string is None):
        raise PylosError("give exactly one of --secret FILE and --secret-string S")
    secret = (secret_string.encode() if secret_string is not None
              else secret_prov.secret_from_file(str(secret_file)))
    if (cert is None) != (key is None):
        raise PylosError("--cert and --key go together")
    if cert is None or key is None:
        ca, cert, key = secret_prov.ensure_server_identity(
            identity_dir or secret_prov.default_identity_dir(),
            list(hostnames) or ["localhost", "127.0.0.1"])
        click.echo(f"Server identity: {cert} (local CA for the enclave's "
                   f"pylos.secret_provisioning.ca: {ca})", err=True)
    policy = _policy(kw) if _policy_given(kw) else policy_from_env()
    if policy.mr_enclave is None and policy.mr_signer is None:
        click.echo("warning: neither MRENCLAVE nor MRSIGNER is checked: this provides no "
                   "security whatsoever", err=True)

    def log(level: str, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        click.echo(f"[{stamp}] {level}: {message}", err=True)

    server = secret_prov.SecretServer(
        secret, cert, key, dict(policy=policy, allow_simulated=kw["allow_simulated"],
                                collateral=_collateral(kw), now=kw["now"],
                                collateral_source=_collateral_source(kw)),
        log, host=host, port=port)
    click.echo(f"Listening on {host}:{server.port}"
               + (" (accepting SIMULATED evidence)" if kw["allow_simulated"] else ""), err=True)
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


COMMANDS = [quote_group, ratls_group, secret_prov_group]
