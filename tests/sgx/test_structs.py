from __future__ import annotations

import subprocess
import sys

import pytest

from pylos.sgx.structs import (
    FLAG_DEBUG,
    FLAG_INIT,
    FLAG_MODE64BIT,
    XFRM_AVX,
    XFRM_AVX512,
    XFRM_LEGACY,
    Attributes,
    ReportBody,
)

from support import TESTDATA

QUOTE_BODY_OFFSET = 48  # the report body inside a v3 quote (docs/formats.md)


def test_attributes_pack_little_endian():
    attributes = Attributes(FLAG_INIT | FLAG_MODE64BIT, XFRM_LEGACY | XFRM_AVX | XFRM_AVX512)
    assert attributes.pack().hex() == "0500000000000000e700000000000000"
    assert Attributes.unpack(attributes.pack()) == attributes
    assert not attributes.debug and Attributes(FLAG_DEBUG, 3).debug
    with pytest.raises(ValueError, match="16 bytes"):
        Attributes.unpack(bytes(15))


def test_report_body_field_offsets():
    body = ReportBody(
        cpu_svn=b"\x01" * 16, misc_select=0x11223344, isv_ext_prod_id=b"\x02" * 16,
        attributes=Attributes(0x7, 0xE7), mr_enclave=b"\x03" * 32, mr_signer=b"\x04" * 32,
        config_id=b"\x05" * 64, isv_prod_id=0x0102, isv_svn=0x0304, config_svn=0x0506,
        isv_family_id=b"\x06" * 16, report_data=b"\x07" * 64,
    )
    raw = body.pack()
    assert len(raw) == 384
    assert raw[0:16] == b"\x01" * 16
    assert raw[16:20] == bytes.fromhex("44332211") and raw[20:32] == bytes(12)
    assert raw[32:48] == b"\x02" * 16
    assert raw[48:64] == Attributes(0x7, 0xE7).pack()
    assert raw[64:96] == b"\x03" * 32 and raw[96:128] == bytes(32)
    assert raw[128:160] == b"\x04" * 32 and raw[160:192] == bytes(32)
    assert raw[192:256] == b"\x05" * 64
    assert raw[256:262] == bytes.fromhex("020104030605") and raw[262:304] == bytes(42)
    assert raw[304:320] == b"\x06" * 16
    assert raw[320:384] == b"\x07" * 64
    assert ReportBody.unpack(raw) == body


def test_report_body_of_a_real_quote():
    quote = (TESTDATA / "dcap" / "sgx_quote_v3.bin").read_bytes()
    raw = quote[QUOTE_BODY_OFFSET : QUOTE_BODY_OFFSET + 384]
    body = ReportBody.unpack(raw)
    assert body.mr_enclave.hex() == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert body.mr_signer.hex() == "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
    assert body.report_data == b"Hello, world!".ljust(64, b"\0")
    assert body.attributes == Attributes(0x5, 0xE7) and not body.attributes.debug
    assert body.pack() == raw


def test_report_body_rejects_wrong_lengths():
    with pytest.raises(ValueError, match="report_data must be 64 bytes, got 13"):
        ReportBody(report_data=b"Hello, world!")
    with pytest.raises(ValueError, match="384 bytes"):
        ReportBody.unpack(bytes(383))


def test_sgx_modules_import_without_cryptography():
    """`pylos run` checks signatures with pow(); importing the SGX modules must stay cheap."""
    code = ("import sys, pylos.sgx.structs, pylos.sgx.measure, pylos.sgx.sigstruct, "
            "pylos.sgx.layout, pylos.sgx.keys; "
            "print(sorted(m for m in sys.modules if m.startswith('cryptography')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"
