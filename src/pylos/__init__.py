"""pylos: a library OS in Python running unmodified Linux programs in a (simulated) SGX enclave."""

__version__ = "0.1.0"
