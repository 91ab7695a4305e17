"""Finding and checking what `pylos run APP` runs, as `gramine-sgx` / `gramine-direct` do.

With `APP.manifest.sgx` and `APP.sig` (SGX mode): the SIGSTRUCT's signature must verify, the
measurement of the `.manifest.sgx` bytes (with this runtime's identity) must equal its
ENCLAVEHASH, its attributes must be the manifest's, and the LibOS hash recorded in the
manifest must be this pylos's. Without them, `APP.manifest` runs in development mode (no
measurement, hence no reports, quotes or sealing keys).

Parsing a 1.6 MB python manifest costs ~300 ms, so the parsed form is cached (marshal) under
the SHA-256 of the manifest bytes, with an HMAC under a key derived from the simulated
platform's secret: a cache entry the host rewrote is detected and the manifest parsed again.
The measurement (MRENCLAVE, attributes) is cached the same way, under the manifest's and the
LibOS's hashes, and so is a `.sig`'s verdict (its signature verified, the fields the run needs)
under the `.sig`'s own hash: a `.sig` is parsed and its signature checked when its bytes are
first seen, and a changed byte is a new `.sig`.
"""

from __future__ import annotations

import hashlib
import hmac
import marshal
import os
from functools import cache

from pylos import install
from pylos.errors import PylosError
from pylos.hashing import cache_dir, read_bytes, write_atomic
from pylos.manifest import Manifest
from pylos.typing_compat import TYPE_CHECKING, NamedTuple

MAC_SIZE = 32

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pylos.sgx.sigstruct import Sigstruct
    from pylos.sgx.structs import ReportBody


class LoadedEnclave(NamedTuple):
    manifest: Manifest
    sgx_mode: bool
    digest: str  # SHA-256 of the manifest file: names its caches
    mr_enclave: bytes | None = None
    mr_signer: bytes | None = None
    # SGX mode: the enclave as EREPORT/EGETKEY see it (its report body, report_data zero),
    # packed: a run that attests nothing never imports the SGX structures.
    report_body: bytes | None = None

    @property
    def identity(self) -> ReportBody | None:
        from pylos.sgx.structs import ReportBody

        return None if self.report_body is None else ReportBody.unpack(self.report_body)


def app_base(app: str) -> str:
    """`APP`, `APP.manifest` and `APP.manifest.sgx` all name the same application."""
    for suffix in (".manifest.sgx", ".manifest"):
        if app.endswith(suffix):
            return app[: -len(suffix)]
    return app


def _cache_key(digest: str, label: bytes) -> bytes:
    """The MAC key of one cache entry (a parsed manifest, a measurement...), from the
    simulated platform's secret (what a CPU keeps in fuses): the caches live in a directory
    the host can write, and in SGX's threat model nothing the host writes may decide what the
    enclave enforces."""
    from pylos.attest.platform import platform_dir

    return hmac.digest(_platform_secret(platform_dir()), label + digest.encode(), "sha256")


@cache
def _platform_secret(root: str) -> bytes:
    """The secret of the simulated platform in `root`, read once per process."""
    from pylos.attest.platform import SimulatedPlatform

    return SimulatedPlatform(root).secret


def _parse_cached(data: bytes, source: str, digest: str) -> Manifest:
    """The parsed manifest: from the cache when its MAC verifies, else parsed and cached."""
    def parse() -> dict:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise PylosError(f"{source}: not a UTF-8 text manifest") from None
        manifest = Manifest.loads(text, source)
        manifest.check()
        return manifest.data

    manifest = Manifest.__new__(Manifest)
    manifest.data = _cached("manifests", digest, parse, b"pylos parsed-manifest cache ")
    manifest.source = source
    return manifest


def load_enclave(app: str, mode: str = "auto") -> LoadedEnclave:
    """The enclave `pylos run APP` starts. `mode`: "auto" (signed when APP.manifest.sgx
    exists, else unsigned), "sgx" (signed or nothing, as gramine-sgx) or "direct" (the
    unsigned APP.manifest, as gramine-direct)."""
    base = app_base(app)
    signed, sig_path, plain = base + ".manifest.sgx", base + ".sig", base + ".manifest"
    if mode == "sgx" and not os.path.exists(signed):
        raise PylosError(f"--sgx: {signed} does not exist; sign the manifest with "
                         f"`pylos sign -m {plain}`")
    if os.path.exists(signed) and mode != "direct":
        if not os.path.exists(sig_path):
            raise PylosError(f"Invalid application path specified ({sig_path} does not exist; "
                             f"sign the manifest with `pylos sign -m {plain}`).")
        _refuse_stale(signed, plain)
        return _load_signed(signed, sig_path)
    if os.path.exists(plain):
        data = _read(plain)
        digest = hashlib.sha256(data).hexdigest()
        return LoadedEnclave(_parse_cached(data, plain, digest), sgx_mode=False,
                             digest=digest)
    if mode == "direct":
        raise PylosError(f"--direct: {plain} does not exist (render it with `pylos manifest`)")
    raise PylosError(f"Invalid application path specified ({signed} does not exist, nor does "
                     f"{plain}).")


def _refuse_stale(signed: str, plain: str) -> None:
    """A `.manifest.sgx` older than its `.manifest` was not made from what is here now:
    running it would run an old build. (An edited `.manifest.sgx` is the measurement's to
    catch: its SIGSTRUCT no longer matches.)"""
    try:
        if os.stat(plain).st_mtime_ns > os.stat(signed).st_mtime_ns:
            raise PylosError(f"{signed} is older than {plain} (the manifest changed after "
                             f"signing): re-sign it with `pylos sign -m {plain}`")
    except FileNotFoundError:
        pass  # no .manifest beside it (shipped signed only), or gone meanwhile


def _read(path: str) -> bytes:
    try:
        return read_bytes(path)
    except OSError as exc:
        raise PylosError(f"cannot read '{path}': {exc.strerror}") from None


def _cached(kind: str, name: str, compute: Callable[[], Any], label: bytes | None = None) -> Any:
    """`compute()`'s result, from the cache `kind`/`name` when its MAC verifies, else
    computed and cached (marshal, under a MAC keyed by `label`, by default
    `pylos <kind> cache `, and `name`)."""
    cached = os.path.join(cache_dir(), kind, f"{name}.marshal")
    key = _cache_key(name, label or f"pylos {kind} cache ".encode())
    try:
        blob = read_bytes(cached)
        mac, body = blob[:MAC_SIZE], blob[MAC_SIZE:]
        if hmac.compare_digest(mac, hmac.digest(key, body, "sha256")):
            return marshal.loads(body)
    except (OSError, EOFError, ValueError, TypeError):
        pass  # missing, damaged or forged: compute
    result = compute()
    try:
        body = marshal.dumps(result)
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        write_atomic(cached, hmac.digest(key, body, "sha256") + body, mode=0o600)
    except OSError:
        pass  # caching is an optimisation only
    return result


def _measured(data: bytes, manifest: Manifest, digest: str) -> tuple:
    """(MRENCLAVE, attribute flags, XFRM, MISCSELECT) of the manifest with this LibOS,
    cached (computing them costs ~40 ms of imports and hashing per start) by the manifest's
    and the LibOS's hashes."""
    def measure() -> tuple:
        from pylos.sgx.sign import enclave_attributes, measure

        attributes, _, misc_select = enclave_attributes(manifest)
        return measure(data, manifest), attributes.flags, attributes.xfrm, misc_select

    return _cached("measurements", f"{digest}-{_libos_hash()[:32]}", measure)


def _libos_hash() -> str:
    """This pylos's `libos_hash`, cached by the package files' stat fingerprint: hashing
    the package's 1.2 MB on every start costs more than stat-ing its files."""
    return _cached("libos", install.libos_fingerprint(), lambda: (install.libos_hash(),))[0]


def _verified_signature(sig: bytes, sig_path: str) -> tuple:
    """(ENCLAVEHASH, MRSIGNER, attribute flags, XFRM, MISCSELECT, the enclave's packed report
    body) of a `.sig` whose signature verifies (PylosError otherwise), cached by the `.sig`'s
    SHA-256: the same bytes verify the same way, and the SIGSTRUCT's code and structures cost
    ~15 ms of imports per start."""
    def verify() -> tuple:
        from pylos.sgx.sigstruct import Sigstruct

        try:
            sigstruct = Sigstruct.unpack(sig)
        except ValueError as exc:
            raise PylosError(f"'{sig_path}': {exc}") from None
        if not sigstruct.verify():
            raise PylosError(f"'{sig_path}': the SIGSTRUCT signature does not verify")
        return (sigstruct.enclave_hash, sigstruct.mr_signer(), sigstruct.attributes.flags,
                sigstruct.attributes.xfrm, sigstruct.misc_select,
                enclave_identity(sigstruct).pack())

    return _cached("signatures", hashlib.sha256(sig).hexdigest(), verify)


def _load_signed(manifest_path: str, sig_path: str) -> LoadedEnclave:
    data = _read(manifest_path)
    enclave_hash, mr_signer, sig_flags, sig_xfrm, sig_misc_select, report_body = (
        _verified_signature(_read(sig_path), sig_path))
    digest = hashlib.sha256(data).hexdigest()
    manifest = _parse_cached(data, manifest_path, digest)
    recorded = manifest.data["loader"]["entrypoint"].get("sha256")
    if recorded != _libos_hash():
        raise PylosError(
            "Hash of entrypoint does not match with the reference hash in manifest "
            f"(the manifest was signed for LibOS {recorded}, this pylos is "
            f"{_libos_hash()}; re-sign it with this pylos)"
        )
    mr_enclave, flags, xfrm, misc_select = _measured(data, manifest, digest)
    if mr_enclave != enclave_hash:
        plain = manifest_path.removesuffix(".sgx")
        raise PylosError(f"'{manifest_path}' does not match the measurement in '{sig_path}' "
                         "(edited after signing, or the .sig of another build): rebuild both "
                         f"with `pylos sign -m {plain}`")
    if (flags, xfrm, misc_select) != (sig_flags, sig_xfrm, sig_misc_select):
        raise PylosError(f"'{sig_path}': attributes do not match the manifest's sgx options")
    return LoadedEnclave(manifest, sgx_mode=True, digest=digest, mr_enclave=enclave_hash,
                         mr_signer=mr_signer, report_body=report_body)


def enclave_identity(sigstruct: Sigstruct) -> ReportBody:
    """The report body of the enclave that `sigstruct` launches on the simulated platform.

    EINIT sets INIT in the running enclave's attributes; CPUSVN is the simulated platform's.
    """
    from pylos.sgx.egetkey import SIM_CPU_SVN
    from pylos.sgx.structs import FLAG_INIT, Attributes, ReportBody

    attributes = Attributes(sigstruct.attributes.flags | FLAG_INIT, sigstruct.attributes.xfrm)
    return ReportBody(
        cpu_svn=SIM_CPU_SVN, misc_select=sigstruct.misc_select,
        isv_ext_prod_id=sigstruct.isv_ext_prod_id, attributes=attributes,
        mr_enclave=sigstruct.enclave_hash, mr_signer=sigstruct.mr_signer(),
        isv_prod_id=sigstruct.isv_prod_id, isv_svn=sigstruct.isv_svn,
        isv_family_id=sigstruct.isv_family_id,
    )

