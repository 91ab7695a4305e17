"""pylos: a library OS in Python that runs unmodified Linux programs in a (simulated) SGX enclave."""

__version__ = "0.1.0"
