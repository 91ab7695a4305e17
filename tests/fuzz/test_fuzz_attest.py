"""Fuzzing `pylos quote view`, `pylos quote verify` (with and without collateral, and the
collateral itself) and `pylos ratls verify`, seeded with the real DCAP quotes, their collateral
and the real RA-TLS certificate."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import random
import re
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from fuzzlib import (
    TEXT_TOKENS,
    FuzzStats,
    Mutator,
    base_seed,
    check,
    check_cli,
    cli_inputs,
    fuzz,
    iterations,
    mutate_tree,
    replay,
    run_all,
)

from pylos.attest.quote import Quote
from pylos.attest.ratls import (
    CBOR_TAG_EVIDENCE,
    LEGACY_OID_QUIRK,
    SUBJECT,
    TCG_EVIDENCE_OID,
    claims_for,
    extract_evidence,
    load_certificate,
    spki_der,
    verify_certificate,
)
from pylos.attest.verify import Policy, check_signatures, parse, verify_quote
from pylos.attest.view import format_fields, view_quote

from support import TESTDATA

NOW = 1752919277  # inside the real collateral's validity window
DCAP = TESTDATA / "dcap"
QUOTES = ("sgx_quote_v3.bin", "sgx_quote_v3_b.bin", "sgx_quote_v3_b_corrupted.bin",
          "sgx_quote_v3_fake_root.bin")
PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----\n?", re.S)
QUOTE_TOKENS = (b"-----BEGIN CERTIFICATE-----\n", b"-----END CERTIFICATE-----\n", b"\n",
                b"\0" * 16, b"\x30\x82", b"\x30\x81", b"\x06\x03\x55\x04\x03", b"\x02\x01\x02")


def quotes() -> list[bytes]:
    return [(DCAP / name).read_bytes() for name in QUOTES]


def collateral() -> bytes:
    return (DCAP / "sgx_quote_v3_collateral.json").read_bytes()


def quote_fields(data: bytes) -> list[tuple[int, int]]:
    """The quote's length and type fields: version, key type, TEE type, signature data length,
    QE auth data length, certification data type and length."""
    fields = [(0, 2), (2, 2), (4, 4), (432, 4)]
    if len(data) >= 1014:
        auth = int.from_bytes(data[1012:1014], "little")
        fields += [(1012, 2), (1014 + auth, 2), (1016 + auth, 4)]
    return fields


def mutate_der(rng: random.Random, der: bytes) -> bytes:
    data = bytearray(der)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data)) if data else 0
        choice = rng.random()
        if choice < 0.4 and data:
            data[at] ^= 1 << rng.randrange(8)
        elif choice < 0.6 and data:
            data[at] = rng.choice((0, 0x01, 0x02, 0x05, 0x06, 0x0C, 0x13, 0x30, 0x31, 0x7F, 0x80,
                                   0x81, 0x82, 0xA0, 0xA3, 0xFF))
        elif choice < 0.8:
            data[at:at] = bytes([rng.randrange(256)])
        else:
            del data[at:at + rng.choice((1, 2, 8))]
    return bytes(data)


def quote_structured(rng: random.Random, data: bytes) -> bytes:
    """The quote with one certificate of its PCK chain mutated as DER (then re-encoded as PEM,
    the length fields made consistent): what reaches cryptography's ASN.1 parser."""
    try:
        quote = Quote.unpack(data)
    except ValueError:
        return data
    blocks = list(PEM_RE.finditer(quote.cert_data))
    if not blocks:
        return data
    block = rng.choice(blocks)
    try:
        der = base64.b64decode(block.group(1))
    except ValueError:
        return data
    pem = (b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(mutate_der(rng, der))
           + b"-----END CERTIFICATE-----\n")
    cert_data = quote.cert_data[:block.start()] + pem + quote.cert_data[block.end():]
    return dataclasses.replace(quote, cert_data=cert_data).pack()


def negative_serial_quote() -> bytes:
    """sgx_quote_v3_b.bin with its first certificate's serial number made negative: parsed,
    with a CryptographyDeprecationWarning that `pylos quote view` must not print."""
    quote = Quote.unpack((DCAP / "sgx_quote_v3_b.bin").read_bytes())
    block = next(PEM_RE.finditer(quote.cert_data))
    der = bytearray(base64.b64decode(block.group(1)))
    at = der.index(b"\xa0\x03\x02\x01\x02\x02") + 7  # [0] version 2, then the serial
    der[at] |= 0x80
    pem = (b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(der))
           + b"-----END CERTIFICATE-----\n")
    cert_data = quote.cert_data[:block.start()] + pem + quote.cert_data[block.end():]
    return dataclasses.replace(quote, cert_data=cert_data).pack()


def json_structured(rng: random.Random, data: bytes) -> bytes:
    try:
        tree = json.loads(data)
    except ValueError:
        return data
    if isinstance(tree, dict) and rng.random() < 0.5:  # the JSON inside the JSON
        key = rng.choice(list(tree))
        try:
            inner = json.loads(tree[key])
            tree[key] = json.dumps(mutate_tree(rng, inner))
            return json.dumps(tree).encode()
        except (ValueError, TypeError):
            pass
    return json.dumps(mutate_tree(rng, tree)).encode()


# ---- RA-TLS seeds: the real certificate, and one with the TCG evidence extension -----------

FIXED_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # deterministic


def ratls_certificate(tagged: bytes, legacy: bytes) -> bytes:
    """A certificate with both RA-TLS extensions, signed deterministically (Ed25519)."""
    cert = (x509.CertificateBuilder().subject_name(SUBJECT).issuer_name(SUBJECT)
            .public_key(FIXED_KEY.public_key()).serial_number(1)
            .not_valid_before(datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC))
            .not_valid_after(datetime.datetime(2030, 12, 31, tzinfo=datetime.UTC))
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(TCG_EVIDENCE_OID),
                                                      tagged), critical=False)
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(LEGACY_OID_QUIRK),
                                                      legacy), critical=False)
            .sign(FIXED_KEY, None))
    return cert.public_bytes(serialization.Encoding.DER)


def tcg_seed() -> bytes:
    quote = (DCAP / "sgx_quote_v3.bin").read_bytes()
    claims = claims_for(spki_der(FIXED_KEY.public_key()))
    return ratls_certificate(cbor2.dumps(cbor2.CBORTag(CBOR_TAG_EVIDENCE, [quote, claims])), quote)


CBOR_VALUES = (None, True, 0, -1, 2**64, 1.5, b"", b"x" * 64, "", "pubkey-hash", [], {},
               [1, b""], [b"", b""], {"pubkey-hash": b""}, {"pubkey-hash": 1},
               cbor2.CBORTag(60000, []), cbor2.CBORTag(60000, [b"", b"", b""]),
               cbor2.CBORTag(1, b""))


def ratls_structured(rng: random.Random, data: bytes) -> bytes:
    """A re-signed certificate whose TCG evidence is replaced by odd CBOR: what reaches the
    CBOR decoding and its type checks."""
    quote = (DCAP / "sgx_quote_v3.bin").read_bytes()
    claims = claims_for(spki_der(FIXED_KEY.public_key()))
    choice = rng.random()
    if choice < 0.3:
        value: object = rng.choice(CBOR_VALUES)
    elif choice < 0.6:
        value = cbor2.CBORTag(CBOR_TAG_EVIDENCE, [quote, rng.choice(CBOR_VALUES)])
    elif choice < 0.8:
        inner = rng.choice(CBOR_VALUES)
        value = cbor2.CBORTag(CBOR_TAG_EVIDENCE, [quote, cbor2.dumps({"pubkey-hash": (
            cbor2.dumps(inner))})])
    else:
        raw = bytearray(cbor2.dumps(cbor2.CBORTag(CBOR_TAG_EVIDENCE, [quote, claims])))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(min(len(raw), 64)) if rng.random() < 0.5 else (
                rng.randrange(len(raw)))
            raw[at] = rng.randrange(256)
        return ratls_certificate(bytes(raw), quote)
    return ratls_certificate(cbor2.dumps(value), quote)


def ratls_seeds() -> list[bytes]:
    pem = (TESTDATA / "ratls" / "graphene_ratls_cert_sbx_debug.pem").read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return [pem, der, tcg_seed()]


# ---- the targets: what the commands call ----------------------------------------------------

def view_target(data: bytes) -> None:
    fields = view_quote(data, "quote.bin")
    json.dumps(fields)
    format_fields(fields)


def verify_target(data: bytes) -> None:
    verify_quote(data, collateral=collateral(), now=NOW, source="quote.bin",
                 collateral_source="collateral.json")


def offline_target(data: bytes) -> None:
    check_signatures(parse(data, "quote.bin"))


def collateral_target(data: bytes) -> None:
    verify_quote((DCAP / "sgx_quote_v3.bin").read_bytes(), collateral=data, now=NOW,
                 source="quote.bin", collateral_source="collateral.json")


def ratls_target(data: bytes) -> None:
    cert = load_certificate(data, "cert.pem")
    extract_evidence(cert, "cert.pem")
    verify_certificate(cert, policy=Policy(), allow_simulated=False, now=NOW, env={},
                       source="cert.pem")


TARGETS = {
    "quote-view": (view_target, 4000, lambda: Mutator(
        quotes(), base_seed(), fields=quote_fields, tokens=QUOTE_TOKENS,
        structured=quote_structured)),
    "quote-verify": (verify_target, 4000, lambda: Mutator(
        quotes(), base_seed() + 1, fields=quote_fields, tokens=QUOTE_TOKENS,
        structured=quote_structured)),
    "quote-verify-offline": (offline_target, 3000, lambda: Mutator(
        quotes(), base_seed() + 2, fields=quote_fields, tokens=QUOTE_TOKENS,
        structured=quote_structured)),
    "collateral": (collateral_target, 1000, lambda: Mutator(
        [collateral()], base_seed() + 3, tokens=TEXT_TOKENS, structured=json_structured)),
    "ratls-verify": (ratls_target, 3000, lambda: Mutator(
        ratls_seeds(), base_seed() + 4, tokens=QUOTE_TOKENS, structured=ratls_structured)),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FuzzStats]:
    return {}


def _run(name: str, results: dict[str, FuzzStats], out: Path) -> FuzzStats:
    target, count, mutator = TARGETS[name]
    if name not in results:
        results[name] = fuzz(name, target, mutator(), iterations(count), out)
    return results[name]


@pytest.mark.parametrize("name", list(TARGETS))
def test_in_process(name: str, results: dict[str, FuzzStats], tmp_path: Path) -> None:
    check(_run(name, results, tmp_path))


@pytest.mark.parametrize(("corpus", "name"), [
    ("quote", "quote-view"), ("quote", "quote-verify"), ("quote", "quote-verify-offline"),
    ("ratls-verify", "ratls-verify")])
def test_corpus(corpus: str, name: str, tmp_path: Path) -> None:
    """The inputs that made these commands trace back before, one per crash class."""
    check(replay(corpus, TARGETS[name][0], tmp_path))


def test_cli(results: dict[str, FuzzStats], tmp_path: Path) -> None:
    """A few of the inputs through the commands themselves: one ERROR line, no traceback,
    exit status 0 or 1 (the seeds: quote verify of the real quote at NOW exits 0)."""
    env = {"RA_TLS_MRENCLAVE": "any", "RA_TLS_MRSIGNER": "any", "RA_TLS_ISV_PROD_ID": "any",
           "RA_TLS_ISV_SVN": "any"}
    (tmp_path / "collateral.json").write_bytes(collateral())
    runs = []
    plans = {
        "quote-view": (quotes()[0], lambda f: ["quote", "view", f]),
        "quote-verify": (quotes()[0], lambda f: ["quote", "verify", f, "--collateral",
                                                 "collateral.json", "--now", str(NOW)]),
        "quote-verify-offline": (quotes()[1], lambda f: ["quote", "verify", "--offline", f]),
        "collateral": (collateral(), lambda f: ["quote", "verify", "q.bin", "--collateral", f,
                                                "--now", str(NOW)]),
        "ratls-verify": (ratls_seeds()[0], lambda f: ["ratls", "verify", f]),
    }
    (tmp_path / "q.bin").write_bytes(quotes()[0])
    (tmp_path / "negative-serial.bin").write_bytes(negative_serial_quote())
    runs += [("negative-serial.bin", ["quote", "view", "negative-serial.bin"]),
             ("negative-serial.bin", ["quote", "verify", "--offline", "negative-serial.bin"])]
    for name, (seed, args) in plans.items():
        stats = _run(name, results, tmp_path / "findings")
        for index, data in enumerate(cli_inputs(stats, seed, 3)):
            file = f"{name}-{index}.bin"
            (tmp_path / file).write_bytes(data)
            runs.append((file, args(file)))
    for (file, _), result in zip(runs, run_all([a for _, a in runs], tmp_path, env), strict=True):
        check_cli(result, file)
