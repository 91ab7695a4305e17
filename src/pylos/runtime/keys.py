"""The enclave's key store: the 16-byte keys encrypted mounts are opened with.

Sources (Gramine's, docs/formats.md): `fs.insecure__keys.<name> = "<32 hex>"` in the
manifest; a 16-byte write to `/dev/attestation/keys/<name>`; a secret-provisioning client
calling `KeyStore.set` before the program starts; and, in SGX mode, the sealing keys
`_sgx_mrenclave` / `_sgx_mrsigner` (simulated EGETKEY over this enclave's identity, keyed by
the simulated platform's secret). Key material is never logged or put in an exception message.
"""

from __future__ import annotations

import _thread  # threading's lock itself, without threading's import (`pylos run` start-up)
import re

from pylos.errors import PylosError
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from pylos.attest.platform import SimulatedPlatform

KEY_SIZE = 16
SEALING_KEYS = {"_sgx_mrenclave": "mrenclave", "_sgx_mrsigner": "mrsigner"}
_HEX_KEY = re.compile(r"[0-9a-fA-F]{32}")


class KeyStore:
    """Named 16-byte keys, shared by the supervisor's FUSE servers (thread-safe)."""

    def __init__(self, report_body: bytes | None = None,
                 platform: SimulatedPlatform | None = None) -> None:
        """`report_body`: the enclave's identity (its packed report body), SGX mode only."""
        self._keys: dict[str, bytes] = {}
        self._declared: set[str] = set()  # named by a mount, maybe not set yet
        self._lock = _thread.allocate_lock()
        self._identity = report_body  # SGX mode only: the sealing keys exist
        self._platform = platform

    @classmethod
    def from_manifest(cls, data: dict, report_body: bytes | None = None,
                      platform: SimulatedPlatform | None = None) -> KeyStore:
        """The store with the manifest's `fs.insecure__keys`, checked (PylosError if bad)."""
        store = cls(report_body, platform)
        keys = data.get("fs", {}).get("insecure__keys", {})
        if not isinstance(keys, dict):
            raise PylosError("fs.insecure__keys: must be a table of name = \"<32 hex digits>\"")
        for name, value in keys.items():
            if name in SEALING_KEYS:
                raise PylosError(f"fs.insecure__keys.{name}: this name is reserved for the "
                                 "sealing key")
            if not isinstance(value, str) or not _HEX_KEY.fullmatch(value):
                raise PylosError(f"fs.insecure__keys.{name}: expected 32 hexadecimal digits "
                                 "(a 16-byte key)")
            store._keys[name] = bytes.fromhex(value)
        return store

    @property
    def sealing_available(self) -> bool:
        return self._identity is not None

    def declare(self, name: str) -> None:
        """A mount uses key `name`: the enclave knows it (Gramine lists it), set or not."""
        if name not in SEALING_KEYS:
            with self._lock:
                self._declared.add(name)

    def names(self) -> list[str]:
        """The keys known to the enclave (what `/dev/attestation/keys/` lists)."""
        with self._lock:
            names = sorted(self._keys.keys() | self._declared)
        if self.sealing_available:
            names = [*SEALING_KEYS, *names]
        return names

    def get(self, name: str) -> bytes | None:
        """The key, or None when it is not set (yet)."""
        if name in SEALING_KEYS:
            if self._identity is None:
                return None
            return self._sealing_key(SEALING_KEYS[name])
        with self._lock:
            return self._keys.get(name)

    def set(self, name: str, key: bytes) -> None:
        """Provision key `name` (16 bytes); the sealing keys cannot be set."""
        if name in SEALING_KEYS:
            raise PermissionError(f"key '{name}' is a sealing key and cannot be set")
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"invalid key name {name!r}")
        if len(key) != KEY_SIZE:
            raise ValueError(f"key '{name}' must be {KEY_SIZE} bytes, got {len(key)}")
        with self._lock:
            self._keys[name] = bytes(key)

    def _sealing_key(self, policy: str) -> bytes:
        from pylos.attest.platform import SimulatedPlatform
        from pylos.sgx.egetkey import sealing_key
        from pylos.sgx.structs import ReportBody

        if self._platform is None:
            self._platform = SimulatedPlatform()
        assert self._identity is not None
        return sealing_key(self._platform.secret, ReportBody.unpack(self._identity), policy)
