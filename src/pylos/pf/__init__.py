"""Gramine protected ("encrypted") files: read v1 and v2, write v2, byte-compatible.

`ProtectedFile` gives random access with a bounded node cache and crash-safe flushes;
`encrypt_stream`/`decrypt_stream` convert whole files at streaming speed (`pylos pf`).
Format and design notes: docs/encrypted-files.md (summary in docs/formats.md).
"""

from pylos.pf.file import (
    GRAMINE_RECOVERY_SUFFIX,
    JOURNAL_SUFFIX,
    ProtectedFile,
    plaintext_size,
)
from pylos.pf.format import KEY_SIZE, PfError, metadata_key, normalize_path, physical_size
from pylos.pf.stream import decrypt_stream, encrypt_stream

__all__ = [
    "GRAMINE_RECOVERY_SUFFIX",
    "JOURNAL_SUFFIX",
    "KEY_SIZE",
    "PfError",
    "ProtectedFile",
    "decrypt_stream",
    "encrypt_stream",
    "metadata_key",
    "normalize_path",
    "physical_size",
    "plaintext_size",
]
