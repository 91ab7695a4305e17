"""Attestation costs: quote generation, verification, RA-TLS certificates and handshakes.

    .venv/bin/python bench/attest.py [--rounds N]

Everything runs in this process on loopback with a temporary simulated platform (no
enclave start). Rows, medians over N rounds:
  - make_quote: one simulated DCAP quote (ECDSA P-256 x2, platform already provisioned)
  - verify_quote simulated: parse + chain + dcap-qvl full verification (simulated collateral)
  - verify_quote real sample: the ground-truth Intel quote with its collateral
  - RA-TLS certificate: P-384 key + two quotes + X.509 (what pylos.ratls does at start)
  - RA-TLS handshake: TCP connect + TLS 1.3 handshake (Python ssl) + verify_peer
  - plain TLS handshake: the same server certificate without verification, for reference
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TESTDATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "dcap"


def median_ms(fn: Callable[[], object], rounds: int) -> tuple[float, float, float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), min(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PYLOS_PLATFORM_DIR"] = f"{tmp}/platform"
        from pylos.attest import ratls
        from pylos.attest.platform import SimulatedPlatform
        from pylos.attest.quote import make_quote
        from pylos.attest.verify import verify_quote
        from pylos.sgx.structs import Attributes, ReportBody

        platform = SimulatedPlatform()
        enclave = ReportBody(cpu_svn=bytes([2] * 16), attributes=Attributes(5, 0xE7),
                             mr_enclave=b"\x11" * 32, mr_signer=b"\x22" * 32)
        start = time.perf_counter()
        make_quote(platform, enclave, b"")
        first = (time.perf_counter() - start) * 1000
        quote = make_quote(platform, enclave, b"")
        rows: list[tuple[str, tuple[float, float, float]]] = [
            ("first quote (provisions the simulated PKI)", (first, first, first)),
            ("make_quote", median_ms(lambda: make_quote(platform, enclave, b"x"), rounds)),
            ("verify_quote simulated (dcap-qvl)", median_ms(
                lambda: verify_quote(quote, allow_simulated=True, platform=platform), rounds)),
        ]
        real = (TESTDATA / "sgx_quote_v3.bin").read_bytes()
        collateral = (TESTDATA / "sgx_quote_v3_collateral.json").read_text()
        rows.append(("verify_quote real sample (dcap-qvl)", median_ms(
            lambda: verify_quote(real, collateral=collateral, now=1752919277), rounds)))
        rows.append(("RA-TLS certificate + key", median_ms(
            lambda: ratls.enclave_certificate(platform, enclave, env={}), rounds)))

        cert, key = ratls.enclave_certificate(platform, enclave, env={})
        Path(tmp, "c.pem").write_bytes(cert)
        Path(tmp, "k.pem").write_bytes(key)
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(Path(tmp, "c.pem"), Path(tmp, "k.pem"))
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                try:
                    with server_context.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1)
                except (OSError, ssl.SSLError):
                    pass

        threading.Thread(target=serve, daemon=True).start()
        env = {name: "any" for name in ratls.MEASUREMENT_VARS}

        def handshake(verify: bool) -> None:
            with socket.create_connection(("127.0.0.1", port)) as raw, \
                    ratls.client_context().wrap_socket(raw) as tls:
                if verify:
                    ratls.verify_peer(tls, env=env, allow_simulated=True, platform=platform)
                tls.sendall(b"x")

        rows.append(("RA-TLS handshake + verify_peer", median_ms(lambda: handshake(True),
                                                                 rounds)))
        rows.append(("plain TLS handshake (same cert, no check)", median_ms(
            lambda: handshake(False), rounds)))
        listener.close()
    print(f"{'operation':<44} {'median':>9} {'min':>8} {'max':>8}   ({rounds} rounds)")
    for name, (med, low, high) in rows:
        print(f"{name:<44} {med:7.2f}ms {low:6.2f}ms {high:6.2f}ms")


if __name__ == "__main__":
    main()
