"""File systems the supervisor serves into the enclave over FUSE (Gramine: one driver per mount
type): `encrypted` mounts (`fs/encrypted.py`) and `/dev/attestation` (`fs/attestation.py`).

How a FUSE mount comes to be (`runtime/launcher.py` calls these, in this order):

1. `FuseSetup.prepare` (supervisor, before anything forks): checks the keys, lists the mounts.
2. `open_devices` (init, inside the enclave's user namespace, before the view is built): one
   `/dev/fuse` descriptor per mount; it must be opened inside that namespace, since the kernel
   requires the descriptor's user namespace to be the mount's.
3. `mount_all` (init, after pivot_root): `mount("pylos", path, "fuse", nosuid|nodev|noexec,
   "fd=N,rootmode=...,allow_other,default_permissions")` on the placeholders the view left
   (a tmpfs directory, or an empty read-only file for a single-file mount).
4. The descriptors travel to the supervisor with the view's root (SCM_RIGHTS); once it has
   dropped its host privileges, `FuseSetup.start` serves each in its own thread, and
   `FuseSetup.stop` flushes everything when the enclave has ended.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pylos.errors import PylosError
from pylos.runtime.keys import KeyStore

if TYPE_CHECKING:
    from pylos.runtime.config import EnclaveConfig, Mount
    from pylos.runtime.fs.fuse import FuseServer
    from pylos.sgx.structs import ReportBody

ATTESTATION_PATH = "/dev/attestation"
MAX_MOUNTS = 64  # descriptors the launch channel carries besides the root
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8


@dataclass(frozen=True)
class FuseMount:
    path: str  # in the view
    kind: str  # "encrypted" or "attestation"
    is_file: bool = False
    mount: Mount | None = None


def encrypted_is_file(mount: Mount) -> bool:
    """A single-file encrypted mount: its host path is a file, or does not exist yet (then the
    file is created on first open, as Gramine does)."""
    assert mount.host is not None
    return not os.path.isdir(mount.host)


def fuse_mounts(config: EnclaveConfig) -> list[FuseMount]:
    """The FUSE mounts of this enclave, in mount order (the same in init and supervisor)."""
    mounts = [FuseMount(m.path, "encrypted", encrypted_is_file(m), m)
              for m in config.mounts if m.type == "encrypted"]
    return [*mounts, FuseMount(ATTESTATION_PATH, "attestation")]


def open_devices(mounts: list[FuseMount]) -> tuple[list[int], list[str]]:
    """One /dev/fuse descriptor per mount that gets one, and warnings for the log.

    Without /dev/fuse (a container without it, or a host where it is root-only and pylos runs
    as another user) encrypted mounts cannot work: an error. `/dev/attestation` alone is then
    left out with a warning, so programs that do not use it still run.
    """
    fds: list[int] = []
    try:
        for _ in mounts:
            fds.append(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        why = f"cannot open /dev/fuse: {exc.strerror}{_fuse_hint()}"
        if any(m.kind == "encrypted" for m in mounts):
            raise PylosError(f"encrypted mounts need FUSE, and {why}") from None
        return [], [f"{ATTESTATION_PATH} is not available ({why})"]
    return fds, []


def _fuse_hint() -> str:
    try:
        mode = os.stat("/dev/fuse").st_mode
    except OSError:
        return " (load the fuse kernel module, or give the container /dev/fuse)"
    if not mode & 0o006:
        return (f" (it is mode {mode & 0o777:o}; distributions ship it 0666: "
                "`chmod 0666 /dev/fuse` as root)")
    return ""


def mount_all(mounts: list[FuseMount], fds: list[int], uid: int, gid: int) -> list[int]:
    """Mount each FUSE descriptor on its place in the view (init, after pivot_root); returns
    their mount IDs (the file policy allows opens there)."""
    from pylos.runtime.namespaces import mount as do_mount

    for spec, fd in zip(mounts, fds, strict=False):
        if spec.kind == "attestation":
            os.makedirs(spec.path, 0o755, exist_ok=True)
        rootmode = "100000" if spec.is_file else "40000"
        options = (f"fd={fd},rootmode={rootmode},user_id={uid},group_id={gid},allow_other,"
                   "default_permissions")
        do_mount("pylos", spec.path, "fuse", MS_NOSUID | MS_NODEV | MS_NOEXEC, options)
    return _mount_ids([m.path for m in mounts[:len(fds)]])


def _mount_ids(paths: list[str]) -> list[int]:
    """From /proc/self/mountinfo: looking at the mounts themselves would ask the FUSE servers,
    which are not running yet."""
    found: dict[str, int] = {}
    with open("/proc/self/mountinfo", "rb") as table:
        for line in table:
            fields = line.split(b" ")
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]),
                           fields[4]).decode(errors="surrogateescape")
            if point in paths and b" - fuse " in line:
                found[point] = int(fields[0])  # the last one listed is on top
    return [found[p] for p in paths if p in found]


@dataclass
class FuseSetup:
    """The supervisor's side: keys, the mounts, and their servers once running."""

    mounts: list[FuseMount]
    keys: KeyStore
    identity: ReportBody | None
    attestation_type: str
    uid: int
    gid: int
    servers: list[FuseServer] = field(default_factory=list)

    @classmethod
    def prepare(cls, config: EnclaveConfig, manifest_data: dict,
                identity: ReportBody | None) -> FuseSetup:
        keys = KeyStore.from_manifest(manifest_data, identity)
        mounts = fuse_mounts(config)
        for spec in mounts:
            if spec.mount is not None:
                keys.declare(spec.mount.key_name)
                if spec.mount.key_name.startswith("_sgx_") and identity is None:
                    config.messages.append(
                        f"warning: the encrypted mount at {spec.path} uses the sealing key "
                        f"'{spec.mount.key_name}', which exists only in SGX mode (sign the "
                        "manifest)")
        attestation_type = manifest_data.get("sgx", {}).get("remote_attestation", "none")
        return cls(mounts, keys, identity, attestation_type, config.uid, config.gid)

    def start(self, fds: list[int], root_fd: int, log: Callable[[str, str], None]) -> None:
        """Serve each mounted descriptor (the supervisor has joined the enclave's namespace)."""
        from pylos.runtime.fs.attestation import AttestationFs
        from pylos.runtime.fs.fuse import Driver, FuseServer

        for spec, fd in zip(self.mounts, fds, strict=False):
            driver: Driver
            if spec.kind == "encrypted":
                from pylos.runtime.fs.encrypted import EncryptedFs  # cryptography: only here

                assert spec.mount is not None and spec.mount.host is not None
                driver = EncryptedFs(spec.mount.host, spec.mount.bound or spec.mount.host,
                                     spec.mount.key_name, self.keys,
                                     spec.mount.enable_recovery, log, spec.path)
            else:
                attestation = AttestationFs(self.keys, self.identity, self.attestation_type,
                                            log, self.uid, self.gid)
                attestation.root_fd = root_fd
                if self.identity is None:
                    log("warning", f"{ATTESTATION_PATH}: development mode (unsigned manifest): "
                        "only keys/ exists; sign the manifest for report and quote")
                driver = attestation
            server = FuseServer(fd, driver, log, spec.path)
            server.start()
            self.servers.append(server)

    def stop(self, timeout: float = 30.0) -> None:
        """The enclave has ended: its mounts go away, each server flushes and stops. A server
        still waiting after `timeout` is flushed from here."""
        for server in self.servers:
            if server.thread is not None:
                server.thread.join(timeout)
            with server.lock:
                server.driver.destroy()
            os.close(server.fd)
        self.servers.clear()
