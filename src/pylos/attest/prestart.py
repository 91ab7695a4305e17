"""What the LibOS does for attestation before the program starts (manifest-driven).

    pylos.ratls = { cert = "/tmp/crt.pem", key = "/tmp/key.pem" }
    pylos.secret_provisioning = { server = "localhost:4433", ca = "/app/ca.pem",
                                  set_key = "default" }      # or env = "NAME" / file = "/path"

`pylos.ratls` makes a fresh P-384 key and its RA-TLS certificate (quotes of this enclave) and
places both at those enclave paths, as Gramine's `gramine-ratls` does, so an unmodified TLS
server can use them. `pylos.secret_provisioning` runs Gramine's secret-provisioning client
with its own RA-TLS certificate and hands the secret to the enclave: as an encrypted-mount key
(`KeyStore.set`), an environment variable, or a read-only file. A refused enclave never starts.

The files live in the view's private tmpfs (`ViewPlan.synthesized`): the private key is never
written to a host file. Both need SGX mode with `sgx.remote_attestation = "dcap"`: a
development-mode enclave has no measurement to attest.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pylos.errors import PylosError

if TYPE_CHECKING:
    from pylos.attest.platform import SimulatedPlatform
    from pylos.runtime.config import EnclaveConfig
    from pylos.runtime.load import LoadedEnclave
    from pylos.runtime.namespaces import ViewPlan


def prepare_enclave(loaded: LoadedEnclave, config: EnclaveConfig, plan: ViewPlan,
                    log: Callable[[str, str], None]) -> None:
    """Apply the manifest's `pylos.ratls` and `pylos.secret_provisioning` (PylosError if the
    enclave cannot be attested or the server refuses it)."""
    options = loaded.manifest.data.get("pylos", {})
    ratls, provisioning = options.get("ratls"), options.get("secret_provisioning")
    if not ratls and not provisioning:
        return
    what = "pylos.ratls" if ratls else "pylos.secret_provisioning"
    if not loaded.sgx_mode or loaded.identity is None:
        raise PylosError(f"{what}: this enclave runs in development mode (unsigned manifest: no "
                         "measurement, so no quote to attest with); sign the manifest with "
                         "`pylos sign`")
    if loaded.manifest.data.get("sgx", {}).get("remote_attestation", "none") != "dcap":
        raise PylosError(f'{what}: needs sgx.remote_attestation = "dcap" (RA-TLS carries '
                         "DCAP quotes)")
    from pylos.attest.platform import SimulatedPlatform
    from pylos.attest.ratls import enclave_certificate

    platform = SimulatedPlatform()
    if ratls:
        start = time.perf_counter()
        cert, key = enclave_certificate(platform, loaded.identity, config.env)
        _place(plan, "pylos.ratls.cert", ratls["cert"], cert)
        _place(plan, "pylos.ratls.key", ratls["key"], key)
        log("warning", f"RA-TLS certificate at {ratls['cert']} (key at {ratls['key']}) carries "
            "SIMULATED evidence: verifiers accept it only when told to accept simulated quotes "
            f"({(time.perf_counter() - start) * 1000:.1f} ms)")
    if provisioning:
        _provision(provisioning, config, plan, platform, loaded, log)


def _place(plan: ViewPlan, option: str, path: str, content: bytes) -> None:
    if not posixpath.isabs(path) or posixpath.normpath(path) in ("/", "/proc", "/dev"):
        raise PylosError(f"{option}: {path!r} must be an absolute file path in the enclave")
    path = posixpath.normpath(path)
    if path in plan.synthesized:
        raise PylosError(f"{option}: {path} is already used by another generated file")
    plan.synthesized[path] = content


def _trusted_ca(config: EnclaveConfig, path: str) -> bytes:
    """The CA file's bytes, if it is a trusted file whose contents match its hash."""
    host = config.host_path_of(posixpath.normpath(path)) if posixpath.isabs(path) else None
    expected = config.trusted.get(host) if host else None
    if expected is None:
        raise PylosError(f"pylos.secret_provisioning.ca: {path} must be a trusted file "
                         "(list it in sgx.trusted_files): it decides which server the enclave "
                         "trusts with its secrets")
    try:
        with open(host, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PylosError(f"pylos.secret_provisioning.ca: cannot read {path}: {exc.strerror}") \
            from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise PylosError(f"pylos.secret_provisioning.ca: {path} does not match its hash in "
                         "sgx.trusted_files (modified after signing?)")
    return data


def _provision(options: dict, config: EnclaveConfig, plan: ViewPlan,
               platform: SimulatedPlatform, loaded: LoadedEnclave,
               log: Callable[[str, str], None]) -> None:
    from pylos.attest.ratls import enclave_certificate
    from pylos.attest.secret_prov import DEFAULT_SERVERS, fetch_secret

    ca = _trusted_ca(config, options["ca"])
    cert, key = enclave_certificate(platform, loaded.identity, config.env)
    secret = fetch_secret(options.get("server", DEFAULT_SERVERS), ca, cert, key, log)
    if "set_key" in options:
        name = options["set_key"]
        if len(secret) != 16:
            raise PylosError(f"pylos.secret_provisioning.set_key: the provisioned secret is "
                             f"{len(secret)} bytes; a key is exactly 16")
        try:
            config.fuse.keys.set(name, secret)
        except (ValueError, PermissionError) as exc:
            raise PylosError(f"pylos.secret_provisioning.set_key: {exc}") from None
    elif "env" in options:
        try:
            text = secret.decode()
        except UnicodeDecodeError:
            text = "\0"
        if "\0" in text:
            raise PylosError("pylos.secret_provisioning.env: the secret is not text (UTF-8 "
                             "without NUL); use file = \"/path\" instead")
        config.env[options["env"]] = text
    else:
        _place(plan, "pylos.secret_provisioning.file", options["file"], secret)
