"""Quotes and reports: real DCAP ground truth, simulated quotes through the same verifier,
the simulated platform store, and attempts to get a forged quote accepted."""

from __future__ import annotations

import datetime
import json
import os
import stat
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pylos.attest import pki
from pylos.attest.platform import SimulatedPlatform
from pylos.attest.quote import Quote, make_quote
from pylos.attest.report import ReportError, make_report, verify_report
from pylos.attest.verify import (
    Policy,
    VerificationError,
    check_signatures,
    parse,
    verify_quote,
)
from pylos.errors import PylosError
from pylos.sgx.structs import TargetInfo

from attest_common import DCAP, SAMPLE_NOW, identity
from support import run_pylos

COLLATERAL = (DCAP / "sgx_quote_v3_collateral.json").read_text()


def real(name: str) -> bytes:
    return (DCAP / name).read_bytes()


# --- real quotes ------------------------------------------------------------------------------

def test_real_quote_verifies_inside_its_collateral_window():
    result = verify_quote(real("sgx_quote_v3.bin"), collateral=COLLATERAL, now=SAMPLE_NOW)
    assert not result.simulated
    assert result.status == "ConfigurationAndSWHardeningNeeded"
    assert result.advisory_ids == ["INTEL-SA-00289", "INTEL-SA-00615"]
    body = result.quote.body
    assert body.mr_enclave.hex() == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert body.mr_signer.hex() == "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
    assert body.report_data == b"Hello, world!".ljust(64, b"\0")
    assert not body.attributes.debug


def test_real_quote_with_todays_clock_is_expired():
    with pytest.raises(VerificationError, match="expired collateral"):
        verify_quote(real("sgx_quote_v3.bin"), collateral=COLLATERAL)


def test_real_quote_policy_flags():
    raw = real("sgx_quote_v3.bin")
    ok = Policy(mr_enclave=bytes.fromhex(
        "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"), isv_prod_id=0,
        min_isv_svn=0, accept_tcb=frozenset({"ConfigurationAndSWHardeningNeeded"}))
    verify_quote(raw, collateral=COLLATERAL, now=SAMPLE_NOW, policy=ok)
    for bad, message in ((Policy(mr_enclave=bytes(32)), "MRENCLAVE"),
                         (Policy(mr_signer=bytes(32)), "MRSIGNER"),
                         (Policy(isv_prod_id=1), "ISVPRODID"),
                         (Policy(min_isv_svn=1), "ISVSVN"),
                         (Policy(accept_tcb=frozenset({"SWHardeningNeeded"})), "TCB status")):
        with pytest.raises(VerificationError, match=message):
            verify_quote(raw, collateral=COLLATERAL, now=SAMPLE_NOW, policy=bad)


def test_second_real_quote_signatures_and_chain_by_subject():
    quote = parse(real("sgx_quote_v3_b.bin"))
    assert quote.body.mr_enclave.hex() == (
        "04d285fd1b0f11a7e29392d7481f2d94dcdb298ba7619b04e7fc320d81f2970e")
    assert len(quote.qe_auth_data) == 32 and quote.cert_type == 5
    # The embedded chain is leaf, root, intermediate: built by subject/issuer it is in order.
    embedded = x509.load_pem_x509_certificates(quote.cert_data.rstrip(b"\0"))
    assert "Root" in embedded[1].subject.rfc4514_string()
    chain = check_signatures(quote)
    assert chain.kind == "intel"
    names = [c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value for c in chain.certs]
    assert names == ["Intel SGX PCK Certificate", "Intel SGX PCK Processor CA",
                     "Intel SGX Root CA"]


def test_corrupted_and_fake_root_quotes_are_rejected():
    with pytest.raises(VerificationError, match="quote signature"):
        check_signatures(parse(real("sgx_quote_v3_b_corrupted.bin")))
    with pytest.raises(VerificationError):
        verify_quote(real("sgx_quote_v3_b_corrupted.bin"), collateral=COLLATERAL, now=SAMPLE_NOW)
    with pytest.raises(VerificationError, match="type 1"):
        verify_quote(real("sgx_quote_v3_fake_root.bin"), collateral=COLLATERAL, now=SAMPLE_NOW)


def test_real_quote_byte_flip_rejected_by_dcap_qvl_too():
    raw = bytearray(real("sgx_quote_v3.bin"))
    raw[112] ^= 1  # MRENCLAVE
    with pytest.raises(VerificationError, match="signature"):
        verify_quote(bytes(raw), collateral=COLLATERAL, now=SAMPLE_NOW)


def test_quote_layout_round_trips_real_quotes():
    for name in ("sgx_quote_v3.bin", "sgx_quote_v3_b.bin"):
        raw = real(name)
        assert Quote.unpack(raw).pack() == raw


def test_not_a_quote_is_bad_input():
    with pytest.raises(PylosError, match="not an SGX DCAP v3 quote"):
        parse(b"\0" * 100)
    with pytest.raises(PylosError, match="version 4"):
        parse(b"\x04\x00" + bytes(1000))


# --- simulated quotes -------------------------------------------------------------------------

def test_simulated_quote_needs_allow_simulated(platform):
    raw = make_quote(platform, identity(), b"nonce")
    with pytest.raises(VerificationError, match="SIMULATED"):
        verify_quote(raw)
    result = verify_quote(raw, allow_simulated=True, platform=platform)
    assert result.simulated and result.status == "UpToDate"
    assert result.quote.body.report_data == b"nonce".ljust(64, b"\0")
    assert result.quote.body.mr_enclave == b"\x11" * 32


def test_simulated_quote_every_flipped_byte_is_rejected(platform):
    raw = make_quote(platform, identity(), bytes(range(64)))
    for offset in [*range(0, 432), *range(436, 500)]:  # header, body, quote signature
        forged = bytearray(raw)
        forged[offset] ^= 0x40
        with pytest.raises(PylosError):
            verify_quote(bytes(forged), allow_simulated=True, platform=platform)


def test_simulated_quote_is_a_real_dcap_layout(platform):
    raw = make_quote(platform, identity(), b"x")
    quote = Quote.unpack(raw)
    assert quote.header.version == 3 and quote.header.att_key_type == 2
    assert quote.cert_type == 5 and quote.cert_data.endswith(b"\0")
    assert quote.qe_report.report_data[:32] == quote.qe_binding
    import dcap_qvl

    parsed = dcap_qvl.parse_quote(raw)
    assert parsed.report.mr_enclave == b"\x11" * 32
    ext = parsed.pck_extension()
    assert ext.fmspc == pki.SIM_FMSPC and ext.pce_svn == pki.SIM_PCE_SVN
    root = x509.load_pem_x509_certificates(quote.cert_data.rstrip(b"\0"))[-1]
    assert "pylos SIMULATED" in root.subject.rfc4514_string()
    assert "NOT INTEL" in root.subject.rfc4514_string()


def test_simulated_quote_from_another_installation_is_rejected(platform, tmp_path):
    other = SimulatedPlatform(tmp_path / "other-platform")
    raw = make_quote(other, identity(), b"x")
    with pytest.raises(VerificationError, match="another pylos installation"):
        verify_quote(raw, allow_simulated=True, platform=platform)


def test_debug_enclave_rejected_unless_allowed(platform):
    raw = make_quote(platform, identity(debug=True), b"x")
    with pytest.raises(VerificationError, match="DEBUG"):
        verify_quote(raw, allow_simulated=True, platform=platform)
    result = verify_quote(raw, allow_simulated=True, platform=platform,
                          policy=Policy(allow_debug=True))
    assert result.status == "UpToDate" and result.notes


def test_expired_simulated_collateral_is_rejected(platform):
    raw = make_quote(platform, identity(), b"x")
    now = int(time.time())
    collateral = platform.pki.collateral(datetime.datetime.fromtimestamp(now, datetime.UTC))
    verify_quote(raw, collateral=collateral, now=now, allow_simulated=True, platform=platform)
    with pytest.raises(VerificationError, match="expired"):
        verify_quote(raw, collateral=collateral, now=now + 40 * 86400, allow_simulated=True,
                     platform=platform)


def _forged_intel_pki():
    """A PKI that copies Intel's names exactly, with its own keys."""
    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                          x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
                          x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(cn, key, issuer_cn, issuer_key, ca, extra=None):
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(issuer_cn))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(datetime.datetime(2020, 1, 1))
             .not_valid_after(datetime.datetime(2049, 1, 1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if extra is not None:
            b = b.add_extension(extra, critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    root_key, ca_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(pki.SGX_EXTENSION_OID),
                                     pki.sgx_extension(bytes(16), bytes([2] * 16), 13,
                                                       bytes(2), pki.SIM_FMSPC))
    certs = [cert("Intel SGX PCK Certificate", leaf_key, "Intel SGX PCK Processor CA", ca_key,
                  False, ext),
             cert("Intel SGX PCK Processor CA", ca_key, "Intel SGX Root CA", root_key, True),
             cert("Intel SGX Root CA", root_key, "Intel SGX Root CA", root_key, True)]
    return certs, leaf_key


def test_quote_under_a_pki_imitating_intel_is_rejected(platform):
    from cryptography.hazmat.primitives import serialization

    certs, leaf_key = _forged_intel_pki()
    honest = Quote.unpack(make_quote(platform, identity(), b"x"))
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs) + b"\0"
    forged = Quote(honest.header, honest.body, honest.signature, honest.attestation_key,
                   honest.qe_report, pki.raw_signature(leaf_key, honest.qe_report.pack()),
                   honest.qe_auth_data, 5, chain).pack()
    chain_info = check_signatures(Quote.unpack(forged))  # internally consistent...
    assert chain_info.kind == "unknown"
    for allow in (False, True):  # ...but not Intel's key, and not the simulation root
        with pytest.raises(VerificationError, match="not the production Intel SGX Root CA key"):
            verify_quote(forged, collateral=COLLATERAL, now=SAMPLE_NOW, allow_simulated=allow)


def test_simulated_chain_cannot_be_relabelled_as_simulated_by_name(platform, tmp_path):
    """A root merely *named* like the simulation root, but not this platform's, is refused."""
    impostor = SimulatedPlatform(tmp_path / "impostor")
    raw = make_quote(impostor, identity(), b"x")
    with pytest.raises(VerificationError):
        verify_quote(raw, allow_simulated=True, platform=platform)


# --- the platform store -----------------------------------------------------------------------

def test_platform_store_is_private_and_lazy(tmp_path):
    store = SimulatedPlatform(tmp_path / "p")
    assert not (tmp_path / "p").exists()
    make_quote(store, identity(), b"")
    assert stat.S_IMODE(os.stat(tmp_path / "p").st_mode) == 0o700
    for name in os.listdir(tmp_path / "p"):
        assert stat.S_IMODE(os.stat(tmp_path / "p" / name).st_mode) == 0o600, name
    assert sorted(os.listdir(tmp_path / "p")) == ["platform-secret.bin", "sim-pki.json"]
    # Same provisioning on the next use (another handle, another process alike).
    again = SimulatedPlatform(tmp_path / "p")
    assert again.pki.root_der() == store.pki.root_der()


def test_damaged_platform_file_is_a_clear_error(tmp_path):
    (tmp_path / "p").mkdir(mode=0o700)
    (tmp_path / "p" / "sim-pki.json").write_text("{")
    with pytest.raises(PylosError, match=r"sim-pki\.json' is damaged"):
        SimulatedPlatform(tmp_path / "p").pki  # noqa: B018


def test_simulated_collateral_is_dcap_qvl_json(platform):
    import dcap_qvl

    text = platform.collateral(int(time.time()))
    dcap_qvl.QuoteCollateralV3.from_json(text)
    tcb = json.loads(json.loads(text)["tcb_info"])
    assert tcb["fmspc"] == pki.SIM_FMSPC.hex().upper() and tcb["id"] == "SGX"
    assert platform.collateral(int(time.time())) == text  # reused while valid


# --- reports ----------------------------------------------------------------------------------

def test_report_mac_verifies_for_its_target_only(platform):
    me, target, other = identity(b"\x01" * 32), identity(b"\x02" * 32), identity(b"\x03" * 32)
    report = make_report(platform, me, TargetInfo.of(target).pack(), b"data")
    assert len(report) == 432
    body = verify_report(platform, target, report)
    assert body.mr_enclave == b"\x01" * 32 and body.report_data == b"data".ljust(64, b"\0")
    with pytest.raises(ReportError, match="MAC"):
        verify_report(platform, other, report)
    tampered = bytearray(report)
    tampered[64] ^= 1
    with pytest.raises(ReportError, match="MAC"):
        verify_report(platform, target, bytes(tampered))


def test_report_bad_inputs(platform):
    with pytest.raises(ReportError, match="target info"):
        make_report(platform, identity(), b"\0" * 100, b"")
    with pytest.raises(ReportError, match="at most 64"):
        make_report(platform, identity(), TargetInfo().pack(), b"x" * 65)


# --- CLI --------------------------------------------------------------------------------------

def test_cli_verify_real_quote():
    args = ("quote", "verify", str(DCAP / "sgx_quote_v3.bin"), "--collateral",
            str(DCAP / "sgx_quote_v3_collateral.json"))
    result = run_pylos(*args, "--now", str(SAMPLE_NOW))
    assert result.returncode == 0, result.stderr
    assert "TCB status   : ConfigurationAndSWHardeningNeeded" in result.stdout
    assert "INTEL-SA-00289, INTEL-SA-00615" in result.stdout
    assert "real SGX" in result.stdout
    result = run_pylos(*args)
    assert result.returncode == 1 and "expired collateral" in result.stderr
    result = run_pylos(*args, "--now", str(SAMPLE_NOW), "--accept-tcb", "SWHardeningNeeded")
    assert result.returncode == 1 and "not accepted" in result.stderr


def test_cli_offline_and_rejections():
    result = run_pylos("quote", "verify", "--offline", str(DCAP / "sgx_quote_v3_b.bin"))
    assert result.returncode == 0, result.stderr
    assert "Signatures and PCK chain verify" in result.stdout
    for name in ("sgx_quote_v3_b_corrupted.bin", "sgx_quote_v3_fake_root.bin"):
        result = run_pylos("quote", "verify", "--offline", str(DCAP / name))
        assert result.returncode == 1 and "ERROR:" in result.stderr, name
    result = run_pylos("quote", "verify", "/nonexistent")
    assert result.returncode == 2 and "cannot read quote" in result.stderr


def test_cli_simulated_quote(platform, tmp_path):
    path = tmp_path / "q.bin"
    path.write_bytes(make_quote(platform, identity(), b"x"))
    result = run_pylos("quote", "verify", str(path))
    assert result.returncode == 1 and "SIMULATED" in result.stderr
    result = run_pylos("quote", "verify", str(path), "--allow-simulated", "--mrenclave",
                       "11" * 32)
    assert result.returncode == 0, result.stderr
    assert "SIMULATED" in result.stdout and "UpToDate" in result.stdout
    result = run_pylos("quote", "verify", str(path), "--allow-simulated", "--mrenclave", "zz")
    assert result.returncode == 2 and "--mrenclave" in result.stderr
    view = run_pylos("quote", "view", str(path))
    assert view.returncode == 0 and "SIMULATED quote" in view.stdout


def test_cli_view_every_field():
    result = run_pylos("quote", "view", "--json", str(DCAP / "sgx_quote_v3.bin"))
    assert result.returncode == 0, result.stderr
    fields = json.loads(result.stdout)
    assert fields["header"]["qe_svn"] == 10 and fields["header"]["pce_svn"] == 15
    assert fields["report_body"]["mr_enclave"].startswith("33d8736d")
    assert fields["signature_data"]["certification_data_size"] == 3548
    assert fields["pck_chain"]["sgx_extension"]["fmspc"] == "00a067110000"
    text = run_pylos("quote", "view", str(DCAP / "sgx_quote_v3_fake_root.bin"))
    assert text.returncode == 0 and "PPID cleartext" in text.stdout


def _resigned(platform, status: str, tamper_only: bool = False) -> str:
    """Simulated collateral whose matching TCB level has `status`, signed by the simulated
    TCB Signing key (or not re-signed: `tamper_only`)."""
    now = datetime.datetime.now(datetime.UTC)
    collateral = json.loads(platform.pki.collateral(now))
    info = json.loads(collateral["tcb_info"])
    info["tcbLevels"][0]["tcbStatus"] = status
    info["tcbLevels"][0]["advisoryIDs"] = ["PYLOS-TEST-1"]
    collateral["tcb_info"] = json.dumps(info, separators=(",", ":"))
    if not tamper_only:
        collateral["tcb_info_signature"] = pki.raw_signature(
            platform.pki.tcb_key, collateral["tcb_info"].encode()).hex()
    return json.dumps(collateral)


def test_tcb_statuses_from_signed_collateral(platform):
    raw = make_quote(platform, identity(), b"x")
    kw = {"allow_simulated": True, "platform": platform}
    result = verify_quote(raw, collateral=_resigned(platform, "OutOfDate"), **kw)
    assert result.status == "OutOfDate" and result.advisory_ids == ["PYLOS-TEST-1"]
    with pytest.raises(VerificationError, match="OutOfDate is not accepted"):
        verify_quote(raw, collateral=_resigned(platform, "OutOfDate"),
                     policy=Policy(accept_tcb=frozenset({"SWHardeningNeeded"})), **kw)
    with pytest.raises(VerificationError, match="Revoked"):  # dcap-qvl refuses it first
        verify_quote(raw, collateral=_resigned(platform, "Revoked"),
                     policy=Policy(accept_tcb=frozenset({"Revoked"})), **kw)


def test_collateral_edited_without_its_signature_is_rejected(platform):
    raw = make_quote(platform, identity(), b"x")
    with pytest.raises(VerificationError, match="tcb_info"):
        verify_quote(raw, collateral=_resigned(platform, "UpToDate", tamper_only=True),
                     allow_simulated=True, platform=platform)


def test_quote_verify_checks_report_data_and_identity_and_prints_json(tmp_path):
    sample = [str(DCAP / "sgx_quote_v3.bin"), "--collateral",
              str(DCAP / "sgx_quote_v3_collateral.json"), "--now", str(SAMPLE_NOW)]
    hello = b"Hello, world!".hex()
    result = run_pylos("quote", "verify", *sample, "--report-data", hello, "--isv-prodid", "0",
                       "--isv-svn", "0", "--json")
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["verified"] is True and verdict["simulated"] is False
    assert verdict["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert verdict["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert verdict["report_data"] == hello + "00" * 51
    (tmp_path / "expected.bin").write_bytes(b"Hello, world!")
    assert run_pylos("quote", "verify", *sample, "--report-data-file",
                     str(tmp_path / "expected.bin")).returncode == 0
    wrong = run_pylos("quote", "verify", *sample, "--report-data", "00", "--json")
    assert wrong.returncode == 1
    assert json.loads(wrong.stdout) == {"verified": False, "error": (
        f"{DCAP / 'sgx_quote_v3.bin'}: REPORTDATA {hello + '00' * 51} is not the expected "
        + "00" * 64)}
    for option, message in ((["--isv-prodid", "1"], "ISVPRODID 0 is not the expected 1"),
                            (["--isv-svn", "3"], "ISVSVN 0 is below the required minimum 3")):
        result = run_pylos("quote", "verify", *sample, *option)
        assert result.returncode == 1 and message in result.stderr, result.stderr
    for option, message in ((["--report-data", "zz"], "expected hexadecimal digits"),
                            (["--report-data", "00" * 65], "65 bytes, REPORTDATA has 64"),
                            (["--report-data", "00", "--report-data-file", "x"],
                             "give --report-data or --report-data-file, not both")):
        result = run_pylos("quote", "verify", *sample, *option)
        assert result.returncode == 2 and message in result.stderr, result.stderr
