"""The simulated SGX platform: the one store of pylos's simulated hardware secrets.

There is no SGX hardware here, so what a CPU would hold in fuses (the seal/report key base)
and what Intel's provisioning would hand out (attestation key, PCK certificate chain,
collateral) lives in one directory per pylos installation: `<pkglibdir>/sim-platform`
(`PYLOS_PLATFORM_DIR` overrides it; tests use a temporary directory). It is created on first
use, 0700, with every file 0600. Everything derived from it is *simulated*: keys never equal
hardware keys, and its certificates chain to a root named as a pylos simulation root, which
every verifier rejects unless told to accept simulated evidence.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cached_property

from pylos.errors import PylosError
from pylos.hashing import read_bytes, write_atomic
from pylos.install import pkglibdir
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from pylos.attest.pki import SimulatedPki

PLATFORM_DIR_ENV = "PYLOS_PLATFORM_DIR"
SECRET_FILE = "platform-secret.bin"
SECRET_SIZE = 32
PKI_FILE = "sim-pki.json"  # attestation key, PCK chain and collateral signing keys
COLLATERAL_FILE = "sim-collateral.json"  # re-issued when the verification time leaves it


def platform_dir() -> str:
    """Where this installation's simulated platform lives."""
    return os.environ.get(PLATFORM_DIR_ENV) or os.path.join(pkglibdir(), "sim-platform")


class SimulatedPlatform:
    """A handle on the store; files inside are created lazily, each on its first use.
    (Paths are strings, not pathlib's: `pylos run` reads the secret, and importing pathlib
    costs its start ~6 ms.)"""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = os.fspath(root) if root is not None else platform_dir()

    def ensure_root(self) -> str:
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            os.chmod(self.root, 0o700)
        except OSError as e:
            raise PylosError(
                f"cannot create the simulated platform store '{self.root}': {e.strerror}"
                f" (set {PLATFORM_DIR_ENV} to a writable directory)"
            ) from None
        return self.root

    def read_or_create(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The bytes of store file `name`, created once with `make()` (0600, atomically)."""
        path = os.path.join(self.ensure_root(), name)
        try:
            return read_bytes(path)
        except FileNotFoundError:
            pass
        data = make()
        # O_EXCL-like: if another process created it meanwhile, its version wins.
        tmp = os.path.join(self.root, f".{name}.{os.getpid()}")
        write_atomic(tmp, data, mode=0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        return read_bytes(path)

    @cached_property
    def secret(self) -> bytes:
        """The base key of every simulated EGETKEY (the CPU's fused secret)."""
        data = self.read_or_create(SECRET_FILE, lambda: os.urandom(SECRET_SIZE))
        if len(data) != SECRET_SIZE:
            raise PylosError(
                f"simulated platform secret '{os.path.join(self.root, SECRET_FILE)}' is "
                f"{len(data)} bytes, expected {SECRET_SIZE}"
            )
        return data

    @cached_property
    def pki(self) -> SimulatedPki:
        """The simulated provisioning: attestation key, PCK chain, collateral signing keys."""
        from pylos.attest.pki import SimulatedPki, make_pki

        data = self.read_or_create(PKI_FILE, lambda: make_pki(os.urandom(16)))
        try:
            return SimulatedPki.loads(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise PylosError(f"simulated platform file '{os.path.join(self.root, PKI_FILE)}' is "
                             f"damaged ({exc}); remove it to provision a new simulated PKI"
                             ) from None

    def collateral(self, now: int) -> str:
        """Simulated collateral (QuoteCollateralV3 JSON) whose validity covers `now`: the stored
        one, or a fresh one signed by the simulated PKI (as a PCCS would serve)."""
        import datetime
        import json

        path = os.path.join(self.ensure_root(), COLLATERAL_FILE)
        try:
            text = read_bytes(path).decode()
            info = json.loads(json.loads(text)["tcb_info"])
            window = [int(datetime.datetime.strptime(info[k], "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=datetime.UTC).timestamp()) for k in ("issueDate", "nextUpdate")]
            if window[0] <= now <= window[1]:
                return text
        except (OSError, ValueError, KeyError, TypeError):
            pass
        text = self.pki.collateral(datetime.datetime.fromtimestamp(now, datetime.UTC))
        write_atomic(path, text.encode(), mode=0o600)
        return text
