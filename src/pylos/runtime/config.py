"""What the runtime needs from a manifest, resolved once at start: the enclave's configuration.

Everything here is decided before the program starts and never re-read from the manifest:
argv and environment (Gramine's rules and messages), the mount table with host paths resolved
against the host working directory, the trusted/allowed file sets, and the limits.
"""

from __future__ import annotations

import os

from pylos.errors import PylosError
from pylos.hashing import read_bytes
from pylos.manifest import Manifest, parse_size
from pylos.manifest.schema import LOG_LEVELS
from pylos.manifest.trusted import uri_to_path
from pylos.typing_compat import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pylos.runtime.fs import FuseSetup
    from pylos.runtime.fs.verified import VerifiedView

DEFAULT_STACK = "256K"
DEFAULT_FDS = 900


class Mount(NamedTuple):
    """One entry of the enclave's mount table: `path` inside, `host` outside (None for tmpfs)."""

    type: str
    path: str
    host: str | None
    key_name: str = "default"
    enable_recovery: bool = False
    bound: str | None = None  # encrypted: the path its files are bound to (Gramine's rule)
    read_only: bool = False  # pylos_read_only: never writable, allowed or not


class EnclaveConfig:
    """The resolved configuration; built by `build_config` with every field below as a keyword
    (a plain class: generating a dataclass's methods costs each `pylos run` start-up time)."""

    entrypoint: str
    argv: list[str]
    env: dict[str, str]
    root: Mount
    mounts: list[Mount]
    start_dir: str
    trusted: dict[str, str]          # absolute host path -> sha256 hex
    allowed: list[str]               # absolute host paths; directories end with "/"
    allow_all_but_log: bool
    log_level: str
    log_file: str | None
    max_threads: int | None          # None: no cap (EDMM)
    enclave_size: int
    stack_size: int
    brk_max_size: int | None  # None: the manifest sets no limit (brk is not trapped)
    fds_limit: int
    uid: int
    gid: int
    disable_aslr: bool
    disallow_subprocesses: bool
    enable_sigterm_injection: bool
    extra_runtime_domain_names_conf: bool
    mock_syscalls: dict[str, int]
    mount_table: list[Mount]  # deepest path first
    insecure: list[str]
    messages: list[str]  # to log once the log is set up
    # Set by the launcher: the FUSE mounts (encrypted, /dev/attestation) and the key store.
    fuse: FuseSetup
    # Trusted files stored encrypted (a workspace's `build --image-key`): (fd, host path) ->
    # the plaintext to verify and serve, or None for a file stored as it is.
    decrypt_trusted: Callable[[int, str], bytes | None] | None
    # Set by the launcher when the view is the verified view (runtime/fs/verified.py): the
    # host paths it shows, and its server once running.
    verified_roots: list[str] | None
    verified_mount_points: dict[str, bool]  # mount points it shows: name -> is a directory
    verified_view: VerifiedView | None

    def __init__(self, **fields: Any) -> None:
        self.mount_table, self.insecure, self.messages = [], [], []
        self.fuse = None  # type: ignore[assignment]
        self.decrypt_trusted = self.verified_roots = self.verified_view = None
        self.verified_mount_points = {}
        names = EnclaveConfig.__annotations__
        unknown = sorted(fields.keys() - names.keys())
        missing = [name for name in names if name not in fields and not hasattr(self, name)]
        if unknown or missing:
            raise TypeError(f"EnclaveConfig: unknown fields {unknown}, missing {missing}")
        self.__dict__.update(fields)

    def host_path_of(self, path: str) -> str | None:
        """The host path behind a canonical in-view path, by the mount table (None: tmpfs)."""
        for mount in self.mount_table:
            inside = mount.path
            if path == inside or path.startswith(inside.rstrip("/") + "/"):
                if mount.host is None:
                    return None
                rest = path[len(inside.rstrip("/")):]
                return mount.host + rest if rest else mount.host
        return None

    def view_path_of(self, host: str) -> str:
        """Where the program sees host path `host` (by the deepest mount showing it), for log
        lines; the host path itself if no mount shows it."""
        best: Mount | None = None
        for mount in self.mount_table:
            if mount.host and (host == mount.host or host.startswith(mount.host.rstrip("/") + "/")
                               ) and (best is None or len(mount.host) > len(best.host or "")):
                best = mount
        if best is None or best.host is None:
            return host
        rest = host[len(best.host.rstrip("/")):]
        return best.path.rstrip("/") + rest if rest else best.path

    def logs(self, level: str) -> bool:
        """Whether messages of `level` are printed under `loader.log_level`."""
        return LOG_LEVELS.index(level) <= LOG_LEVELS.index(self.log_level)


def _host_path(uri: str, key: str, cwd: str) -> str:
    path = uri_to_path(uri, key)
    return os.path.normpath(path if path.startswith("/") else os.path.join(cwd, path))


def _mount(table: dict, key: str, cwd: str, path: str) -> Mount:
    kind = table.get("type", "chroot")
    uri = table.get("uri")
    if kind == "tmpfs":
        host = None
    elif kind == "chroot" and isinstance(uri, str) and uri.startswith("dev:"):
        kind, host = "device", os.path.normpath(uri[len("dev:"):])  # Gramine's passthrough
        if not host.startswith("/"):
            raise PylosError(f"{key}.uri: a dev: URI names an absolute host path, got {uri!r}")
    elif uri is None:
        raise PylosError(f"{key}.uri: required for a {kind} mount")
    else:
        host = _host_path(uri, f"{key}.uri", cwd)
    if not path.startswith("/"):
        raise PylosError(f"{key}.path: must be an absolute path inside the enclave, got {path!r}")
    bound = None
    if kind == "encrypted":
        from pylos.pf import normalize_path

        bound = normalize_path(uri_to_path(uri, f"{key}.uri"))  # relative stays relative
    return Mount(kind, os.path.normpath(path), host, table.get("key_name", "default"),
                 table.get("enable_recovery", False), bound, table.get("pylos_read_only", False))


def _read_nul_separated(uri: str, key: str, cwd: str) -> list[str]:
    path = _host_path(uri, key, cwd)
    try:
        data = read_bytes(path)
    except OSError as exc:
        raise PylosError(f"{key}: cannot read '{path}': {exc.strerror}") from None
    if data and not data.endswith(b"\0"):
        raise PylosError(f"{key}: '{path}' must be NUL-terminated entries "
                         "(use `pylos argv-serializer`)")
    return [item.decode() for item in data.split(b"\0")[:-1]]


def resolve_argv(loader: dict, libos_entrypoint: str, host_args: list[str], cwd: str,
                 messages: list[str]) -> list[str]:
    """argv by Gramine's rules: one of loader.argv / argv_src_file / use_cmdline_argv."""
    options = [k for k in ("argv", "argv_src_file", "insecure__use_cmdline_argv")
               if loader.get(k) not in (None, False)]
    if len(options) > 1:
        raise PylosError("Options loader.argv, loader.argv_src_file, and "
                         "loader.insecure__use_cmdline_argv are mutually exclusive")
    if loader.get("insecure__use_cmdline_argv"):
        return [libos_entrypoint, *host_args]
    if "argv" in loader or "argv_src_file" in loader:
        if "argv" in loader:
            argv = list(loader["argv"])
            source = "loader.argv"
        else:
            argv = _read_nul_separated(loader["argv_src_file"], "loader.argv_src_file", cwd)
            source = "loader.argv_src_file"
        if host_args:
            messages.append(f"error: Discarding cmdline arguments ({' '.join(host_args)}) "
                            f"because {source} was specified in the manifest.")
        if not argv:
            raise PylosError(f"{source}: argv must not be empty")
        return argv
    if host_args:
        raise PylosError("argv handling wasn't configured in the manifest, but cmdline "
                         "arguments were specified.")
    return [libos_entrypoint]


def resolve_env(loader: dict, host_env: dict[str, str], cwd: str) -> dict[str, str]:
    """The program's environment: clean by default (Gramine), as the manifest says."""
    env: dict[str, str] = dict(host_env) if loader.get("insecure__use_host_env") else {}
    if "env_src_file" in loader:
        for entry in _read_nul_separated(loader["env_src_file"], "loader.env_src_file", cwd):
            name, sep, value = entry.partition("=")
            if not sep:
                raise PylosError(f"loader.env_src_file: entry {entry!r} is not KEY=VALUE")
            env[name] = value
    for name, spec in loader.get("env", {}).items():
        if isinstance(spec, str):
            env[name] = spec
        elif "value" in spec:
            env[name] = spec["value"]
        elif spec.get("passthrough") and name in host_env:
            env[name] = host_env[name]
    return env


INSECURE_OPTIONS = (
    ("sgx", "debug", True, "sgx.debug = true"),
    ("loader", "insecure__use_cmdline_argv", True, "loader.insecure__use_cmdline_argv = true"),
    ("loader", "insecure__use_host_env", True, "loader.insecure__use_host_env = true"),
    ("loader", "insecure__disable_aslr", True, "loader.insecure__disable_aslr = true"),
    ("sys", "insecure__allow_eventfd", True, "sys.insecure__allow_eventfd = true"),
    ("sys", "experimental__enable_flock", True, "sys.experimental__enable_flock = true"),
    ("sgx", "insecure__allow_memfaults_without_exinfo", True,
     "sgx.insecure__allow_memfaults_without_exinfo"),
    ("sgx", "file_check_policy", "allow_all_but_log", "sgx.file_check_policy = allow_all_but_log"),
)


def _insecure_items(data: dict) -> list[str]:
    items = [text for table, key, bad, text in INSECURE_OPTIONS
             if data.get(table, {}).get(key) == bad]
    level = data.get("loader", {}).get("log_level", "error")
    if level in ("warning", "debug", "trace", "all"):
        items.insert(1, f"loader.log_level = {level}")
    if data.get("sgx", {}).get("allowed_files"):
        items.append("sgx.allowed_files = [ ... ]")
    if data.get("fs", {}).get("insecure__keys"):
        items.append('fs.insecure__keys.* = "..."')
    return items


def build_config(manifest: Manifest, host_args: list[str], host_env: dict[str, str],
                 cwd: str) -> EnclaveConfig:
    """Resolve a validated manifest into the runtime configuration."""
    data = manifest.data
    loader, sgx, sys_ = data["loader"], data["sgx"], data.get("sys", {})
    fs = data["fs"]
    messages: list[str] = []
    entrypoint = data["libos"]["entrypoint"]
    start_dir = fs.get("start_dir", "/")
    if not entrypoint.startswith("/"):
        entrypoint = os.path.normpath(os.path.join(start_dir, entrypoint))

    root = _mount(fs.get("root", {"uri": "file:."}), "fs.root", cwd, "/")
    mounts = [_mount(m, f"fs.mounts[{i}]", cwd, m["path"]) for i, m in enumerate(fs["mounts"])]
    trusted = {_host_path(e["uri"], "sgx.trusted_files", cwd): e["sha256"]
               for e in sgx["trusted_files"] if "sha256" in e}
    if len(trusted) != len(sgx["trusted_files"]):
        raise PylosError("sgx.trusted_files: every entry needs its sha256; render the manifest "
                         "with `pylos manifest` (or sign it) first")
    allowed = []
    for i, uri in enumerate(sgx.get("allowed_files", [])):
        if uri.startswith("dev:"):
            continue  # devices: /dev of the view already offers the safe ones
        host = _host_path(uri, f"sgx.allowed_files[{i}]", cwd)
        allowed.append(host + "/" if uri.endswith("/") else host)

    edmm = sgx["edmm_enable"]
    return EnclaveConfig(
        entrypoint=entrypoint,
        argv=resolve_argv(loader, data["libos"]["entrypoint"], host_args, cwd, messages),
        env=resolve_env(loader, host_env, cwd),
        root=root,
        mounts=mounts,
        start_dir=start_dir,
        trusted=trusted,
        allowed=allowed,
        allow_all_but_log=sgx.get("file_check_policy", "strict") == "allow_all_but_log",
        log_level=loader.get("log_level", "error"),
        log_file=loader.get("log_file"),
        max_threads=None if edmm else sgx["max_threads"],
        enclave_size=manifest.enclave_size,
        stack_size=parse_size(sys_.get("stack", {}).get("size", DEFAULT_STACK), "sys.stack.size"),
        brk_max_size=(parse_size(sys_["brk"]["max_size"], "sys.brk.max_size")
                      if "max_size" in sys_.get("brk", {}) else None),
        fds_limit=sys_.get("fds", {}).get("limit", DEFAULT_FDS),
        uid=loader.get("uid", 0),
        gid=loader.get("gid", 0),
        disable_aslr=loader.get("insecure__disable_aslr", False),
        disallow_subprocesses=sys_.get("disallow_subprocesses", False),
        enable_sigterm_injection=sys_.get("enable_sigterm_injection", False),
        extra_runtime_domain_names_conf=sys_.get("enable_extra_runtime_domain_names_conf", False),
        mock_syscalls={m["name"]: m.get("return", 0) for m in sys_.get("debug__mock_syscalls", [])},
        # Deeper paths shadow shallower ones, and a later mount shadows an earlier one.
        mount_table=sorted(reversed([root, *mounts]), key=lambda m: -len(m.path.rstrip("/"))),
        insecure=_insecure_items(data),
        messages=messages,
    )
