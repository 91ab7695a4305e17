"""Attestation: the simulated SGX platform, reports, quotes, their verification, RA-TLS."""
