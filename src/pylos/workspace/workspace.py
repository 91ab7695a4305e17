"""An Occlum-style workspace: `init`/`new`, and `build` into a signed Gramine-style manifest.

Layout (docs/occlum.md):

    Occlum.json           the user's configuration (pylos.workspace.config)
    image/                the enclave's root file system, read-only, every file trusted
    build/enclave.manifest, build/enclave.manifest.sgx, build/enclave.sig
    build/pylos/          pylos's own part of the enclave, mounted at /.pylos: the exec server,
                          its config, the host python3 that runs it with its libraries
    run/upper/root        the writable layer, an encrypted mount at /root: Gramine protected
                          files sealed to MRSIGNER; kept across runs and rebuilds (`build
                          --reset` empties it)
    run/server/           the exec server's socket (mounted at /.pylos/run)

The manifest: `fs.root` = image/ (so absolute in-image paths are what programs see), each
image file a trusted file (relative URIs: moving the workspace keeps MRENCLAVE), hostfs mounts
as read-write chroot mounts, ramfs as tmpfs, resource limits and metadata as sgx/sys keys.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pylos.errors import PylosError
from pylos.hashing import HashCache, ProgressCallback, hash_files, write_atomic
from pylos.workspace.config import TEMPLATE, WorkspaceConfig, load_config

CONFIG_NAME = "Occlum.json"
STATUS_NAME = ".__occlum_status"
ENCLAVE = "build/enclave"
PYLOS_DIR = "build/pylos"
WRITABLE = ("/root",)  # the persistent, encrypted writable layer (docs/occlum.md)
SCRATCH = ("/tmp",)  # fresh tmpfs on each boot
LAYER_KEY = "_sgx_mrsigner"  # survives rebuilds signed with the same key (and ISV ids)
IMAGE_DIRS = ("bin", "lib", "lib64", "root", "host", "tmp", "dev", "proc", "etc", "sbin",
              "ext2")
LOADER = "/lib64/ld-linux-x86-64.so.2"
SERVER_MODULES = "import _socket, select, marshal, posix, _signal, time, os"

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    """The default log: library calls print nothing unless the caller asks."""


def find_workspace(path: Path | None = None) -> Path:
    ws = (path or Path.cwd()).absolute()
    if not (ws / CONFIG_NAME).is_file():
        raise PylosError(f"'{ws}' is not a pylos/Occlum workspace (no {CONFIG_NAME}; create one "
                         "with `pylos new DIR` or `pylos init`)")
    return ws


# ---- init / new ---------------------------------------------------------------------------
def host_libc() -> str:
    from pylos.workspace.elfdeps import DEFAULT_DIRS, Resolver

    resolver = Resolver()
    for directory in [*DEFAULT_DIRS, *resolver.conf_dirs]:
        candidate = os.path.join(directory, "libc.so.6")
        info = resolver.info(candidate) if os.path.isfile(candidate) else None
        if info is not None and info.machine == "EM_X86_64":
            return candidate
    raise PylosError("the host's glibc (libc.so.6) was not found; pylos runs programs with the "
                     "host's glibc")


def init_workspace(ws: Path, log: Log = _quiet) -> None:
    """`pylos init`: Occlum.json, image/ with Occlum's base dirs, /etc/hosts, loader + libc."""
    from pylos.workspace import bom

    config = ws / CONFIG_NAME
    if config.exists():
        raise PylosError(f"'{ws}' is already a workspace ({CONFIG_NAME} exists)")
    if not os.path.exists(LOADER):
        raise PylosError(f"the host has no glibc loader at {LOADER}")
    image = ws / "image"
    for name in IMAGE_DIRS:
        (image / name).mkdir(parents=True, exist_ok=True)
    write_atomic(image / "etc" / "hosts", b"127.0.0.1 localhost\n")
    if os.path.isfile("/etc/localtime"):
        shutil.copyfile("/etc/localtime", image / "etc" / "localtime")
    planner = bom.Planner(image, [])
    planner.copy_file(LOADER, LOADER, "pylos init", autodep=False)
    libc = host_libc()
    planner.copy_file(libc, libc, "pylos init", autodep=False)
    bom.apply_plan(planner.finish())
    write_atomic(config, (json.dumps(TEMPLATE, indent=4) + "\n").encode())
    write_atomic(ws / STATUS_NAME, b"initialized")
    log(f"Initialized a pylos workspace (Occlum layout) in {ws}")


def new_workspace(ws: Path, log: Log = _quiet) -> None:
    if os.path.lexists(ws):
        raise PylosError(f"'{ws}' already exists")
    ws.mkdir(parents=True)
    init_workspace(ws, log)


# ---- build --------------------------------------------------------------------------------
@dataclass
class BuildResult:
    mr_enclave: str
    mr_signer: str
    trusted: int
    enclave_size: int


def _size(value: int) -> str:
    for suffix, unit in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


def _power_of_two(value: int) -> int:
    return 1 << max(12, (value - 1).bit_length())


def server_python() -> str:
    """The interpreter that runs the exec server: the system python3, else pylos's own."""
    for candidate in ("/usr/bin/python3", getattr(sys, "_base_executable", sys.executable)):
        if candidate and os.path.isfile(candidate):
            return os.path.realpath(candidate)
    raise PylosError("no python3 found to run the exec server in the enclave")


def _copy_if_changed(source: str, dest: Path) -> None:
    from pylos.workspace import bom

    try:
        src, dst = os.stat(source), os.stat(dest)
        if (src.st_size, src.st_mtime_ns) == (dst.st_size, dst.st_mtime_ns):
            return
    except OSError:
        pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    bom._copy_atomic(source, dest)


def stage_pylos(ws: Path, config: WorkspaceConfig) -> dict:
    """build/pylos: the server, its config and the python3 running it (with its libraries)."""
    from pylos.workspace.elfdeps import Resolver

    staged = ws / PYLOS_DIR
    python = server_python()
    # Exactly the files the server's imports load (listed before anything else is imported).
    probe = subprocess.run(
        [python, "-S", "-s", "-B", "-c",
         f"{SERVER_MODULES}, sys; print(repr([sys.prefix, 'python%d.%d' % sys.version_info[:2],"
         " sorted({m.__file__ for m in list(sys.modules.values())"
         " if getattr(m, '__file__', None)})]))"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    if probe.returncode != 0:
        raise PylosError(f"cannot inspect {python} for the exec server: {probe.stderr.strip()}")
    import ast

    prefix, version, modules = ast.literal_eval(probe.stdout)
    keep: set[Path] = set()

    def put(source: str, rel: str) -> None:
        dest = staged / rel
        _copy_if_changed(source, dest)
        keep.add(dest)

    put(python, "python/bin/python3")
    stdlib = os.path.join(prefix, "lib", version) + "/"
    elfs = [python]
    for module in modules:
        if module.startswith(stdlib):
            put(module, f"python/lib/{version}/{module[len(stdlib):]}")
            if module.endswith(".so"):
                elfs.append(module)
    resolver = Resolver()
    loader = None
    for elf in elfs:
        deps = resolver.resolve(elf)
        if deps is None:
            continue
        if deps.missing:
            name, needed_by = deps.missing[0]
            raise PylosError(f"exec server: '{name}' needed by '{needed_by}' not found")
        if deps.interp_host:
            loader = os.path.basename(deps.interp_host)
            put(os.path.realpath(deps.interp_host), f"lib/{loader}")
        for lib in deps.libraries:
            put(os.path.realpath(lib), f"lib/{os.path.basename(lib)}")
    if loader is None:
        raise PylosError(f"{python} has no ELF interpreter; cannot run the exec server")
    put(str(Path(__file__).with_name("enclave_server.py")), "server.py")
    server_config = {"entry_points": config.entry_points, "env_default": config.env_default,
                     "env_untrusted": config.env_untrusted}
    config_path = staged / "config.marshal"
    data = marshal.dumps(server_config)
    if not config_path.exists() or config_path.read_bytes() != data:
        write_atomic(config_path, data)
    keep.add(config_path)
    (staged / "run").mkdir(exist_ok=True)  # mount point of run/server
    for path in sorted(staged.rglob("*"), reverse=True):  # leftovers of an older build
        if path.is_file() and path not in keep:
            path.unlink()
    return {"loader": f"/.pylos/lib/{loader}", "python": "/.pylos/python/bin/python3"}


def image_files(image: Path, skip: tuple[str, ...] = WRITABLE + SCRATCH) -> list[str]:
    """Regular files of the image as in-image paths (symlinks resolve to files listed here)."""
    found: list[str] = []
    skipped = {image / p.lstrip("/") for p in skip}

    def walk(directory: Path, inside: str) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if path not in skipped:
                    walk(path, f"{inside}{entry.name}/")
            elif entry.is_file(follow_symlinks=False):
                found.append(f"{inside}{entry.name}")

    walk(image, "/")
    return found


def prepare_writable_layer(ws: Path, reset: bool, log: Log) -> None:
    """run/upper: created once, kept across builds (`reset` empties it)."""
    upper = ws / "run" / "upper"
    if reset and upper.exists():
        shutil.rmtree(upper)
        log("Writable layer reset (run/upper emptied)")
    (ws / "run" / "server").mkdir(parents=True, exist_ok=True)
    for inside in WRITABLE:
        (upper / inside.lstrip("/")).mkdir(parents=True, exist_ok=True)


def copy_up(ws: Path, key: bytes, log: Log) -> int:
    """Image files under the writable paths go into the layer, encrypted, when the layer has
    no file of that name (Occlum's union: the upper layer wins). Returns how many."""
    from pylos.pf import encrypt_stream

    copied = 0
    for inside in WRITABLE:
        source = ws / "image" / inside.lstrip("/")
        if not source.is_dir():
            continue
        layer = Path("run/upper") / inside.lstrip("/")  # relative: the mount's bound paths
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            target = ws / layer / rel
            if os.path.lexists(target):
                continue
            if path.is_symlink():
                os.symlink(os.readlink(path), target)
            elif path.is_dir():
                target.mkdir(parents=True)
            elif path.is_file():
                tmp = target.with_name(f".pylos-new-{target.name}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    with open(path, "rb") as plain:
                        encrypt_stream(plain, os.fstat(plain.fileno()).st_size, fd, key,
                                       str(layer / rel))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, target)
                copied += 1
    if copied:
        log(f"Copied {copied} image files under {', '.join(WRITABLE)} into the writable layer")
    return copied


PROTECTED = ("image", "build", "run", CONFIG_NAME)


def _hostfs_mounts(ws: Path, host: Path, target: str) -> tuple[list[dict], list[str]]:
    """A hostfs mount (read-write: Occlum's template mounts the workspace itself at /host so
    that programs create host files there), and its allowed-file URI. What of the workspace
    lies below it is bound read-only over it: image/, build/, run/ and Occlum.json would
    otherwise be writable from inside (the enclave could rewrite its own trusted files, the
    exec server's socket directory or the writable layer's ciphertext); a source inside one
    of them is read-only as a whole."""
    protected = [ws / name for name in PROTECTED]
    mount = {"path": target, "uri": _uri(ws, host)}
    if any(path == host or path in host.parents for path in protected):
        return [{**mount, "pylos_read_only": True}], []
    covers = [path for path in protected if host in path.parents and path.exists()]
    overlays = [{"path": f"{target.rstrip('/')}/{path.relative_to(host)}",
                 "uri": _uri(ws, path), "pylos_read_only": True} for path in covers]
    return [mount, *overlays], [_uri(ws, host) + ("/" if host.is_dir() else "")]


def _uri(ws: Path, host: Path) -> str:
    try:
        rel = host.relative_to(ws)
        return f"file:{rel}" if str(rel) != "." else "file:."
    except ValueError:
        return f"file:{host}"


LOG_LEVELS = {"off": "none", "error": "error", "warn": "warning", "info": "debug",
              "trace": "trace"}


def manifest_data(ws: Path, config: WorkspaceConfig, staged: dict,
                  trusted: list[dict], root: str = "image") -> dict:
    occlum_level = os.environ.get("OCCLUM_LOG_LEVEL", "error")
    if occlum_level not in LOG_LEVELS:
        raise PylosError(f"OCCLUM_LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)}, got "
                         f"{occlum_level!r}")
    # read-only even though Occlum's /host mount allows the workspace that holds it
    mounts: list[dict] = [{"path": "/.pylos", "uri": f"file:{PYLOS_DIR}", "pylos_read_only": True},
                          {"path": "/.pylos/run", "uri": "file:run/server"}]
    allowed = ["file:run/server/"]
    for inside in WRITABLE:
        mounts.append({"type": "encrypted", "path": inside, "uri": f"file:run/upper{inside}",
                       "key_name": LAYER_KEY})
    for inside in SCRATCH:
        mounts.append({"type": "tmpfs", "path": inside})
    for mount in config.mounts:
        if mount.type == "ramfs":
            mounts.append({"type": "tmpfs", "path": mount.target})
            continue
        host = Path(mount.source) if mount.source.startswith("/") else (ws / mount.source)
        if not host.exists():
            raise PylosError(f"{CONFIG_NAME}: hostfs source '{mount.source}' (for "
                             f"{mount.target}) does not exist")
        hostfs, uris = _hostfs_mounts(ws, host.resolve(), mount.target)
        mounts += hostfs
        allowed += uris
    enclave_size = _power_of_two(config.user_space_size)
    return {
        "libos": {"entrypoint": staged["loader"]},
        "loader": {
            # The exec server (`pylos start`); `pylos run` starts the program itself instead.
            "argv": [staged["loader"], "--library-path", "/.pylos/lib", staged["python"],
                     "-S", "-s", "-B", "/.pylos/server.py", "/.pylos/config.marshal"],
            "env": {"PYTHONHOME": "/.pylos/python"},
            "log_level": LOG_LEVELS[occlum_level],
        },
        # Occlum's union root: the image below, changes above (docs/occlum.md)
        "fs": {"root": {"type": "union", "uri": f"file:{root}"}, "start_dir": "/",
               "mounts": mounts},
        "sys": {"stack": {"size": _size(config.stack_size)},
                "brk": {"max_size": _size(config.heap_size)},
                "enable_extra_runtime_domain_names_conf": True},
        "sgx": {"enclave_size": _size(enclave_size), "max_threads": config.max_threads,
                "isvprodid": config.product_id, "isvsvn": config.version_number,
                "debug": config.debuggable, "trusted_files": trusted,
                "allowed_files": allowed},
    }


def build_workspace(ws: Path, key_path: Path | None = None, reset: bool = False,
                    log: Log = _quiet,
                    progress: Callable[..., ProgressCallback | None] | None = None,
                    image_key: Path | None = None) -> BuildResult:
    from pylos.manifest import Manifest
    from pylos.sgx import keys
    from pylos.sgx.sign import parse_date, sign_manifest

    config = load_config(ws / CONFIG_NAME)
    for warning in config.warnings:
        log(f"warning: {warning}")
    image = ws / "image"
    if not image.is_dir():
        raise PylosError(f"'{image}' does not exist: fill it (e.g. `pylos copy-bom -f BOM "
                         "--root image`) before building")
    if key_path is None and not keys.default_key_path().exists():
        # Occlum signs with a debug key when none is given; pylos makes the user's default one.
        keys.write_signing_key(keys.default_key_path(), keys.generate_signing_key())
        log(f"Generated the default signing key {keys.default_key_path()}")
    key = keys.load_signing_key(key_path or keys.default_key_path())
    (ws / "build").mkdir(exist_ok=True)
    staged = stage_pylos(ws, config)
    prepare_writable_layer(ws, reset, log)

    files = image_files(image)
    if image_key is not None:
        from pylos.workspace.image import IMAGE_DIR, encrypt_image, read_image_key

        plain_key = read_image_key(image_key)
        callback = progress(len(files), "encrypting image files") if progress else None
        changed = encrypt_image(ws, files, plain_key, callback)
        log(f"Encrypted image: {changed} of {len(files)} files (re-)encrypted into {IMAGE_DIR}/")
        root = IMAGE_DIR
    else:
        from pylos.workspace.image import remove_encrypted_image

        remove_encrypted_image(ws)
        root = "image"
    # Trusted with the hash of the plaintext (image/), stored where the root is.
    paths = {f"file:{root}{p}": str(image) + p for p in files}
    for path in sorted((ws / PYLOS_DIR).rglob("*")):
        if path.is_file():
            paths[_uri(ws, path)] = str(path)
    cache = HashCache.default()
    callback = progress(len(paths)) if progress is not None else None
    try:
        digests = hash_files(paths.values(), cache, callback)
    except OSError as exc:
        raise PylosError(f"cannot hash image file: {exc}") from None
    cache.save()
    trusted = [{"uri": uri, "sha256": digests[host]} for uri, host in paths.items()]

    with contextlib.chdir(ws):  # relative URIs are relative to the workspace
        manifest = Manifest(manifest_data(ws, config, staged, trusted, root),
                            f"{ENCLAVE}.manifest")
        signed = sign_manifest(manifest, key, parse_date(None), None, cache, None)
    from pylos.runtime.keys import KeyStore
    from pylos.runtime.load import enclave_identity

    keys = KeyStore(enclave_identity(signed.sigstruct).pack())
    layer_key = keys.get(LAYER_KEY)
    assert layer_key is not None  # a signed enclave always has its sealing keys
    copy_up(ws, layer_key, log)
    if image_key is not None:
        from pylos.workspace.image import seal_image_key

        sealing_key = keys.get("_sgx_mrenclave")
        assert sealing_key is not None
        seal_image_key(ws, plain_key, sealing_key)
    image_type = "encrypted" if image_key is not None else "integrity-only"
    try:
        write_atomic(ws / "build" / "image_config.json",
                     json.dumps({"image_type": image_type}).encode() + b"\n")
        write_atomic(ws / f"{ENCLAVE}.manifest", manifest.dumps().encode())
        write_atomic(ws / f"{ENCLAVE}.manifest.sgx", signed.manifest_sgx)
        write_atomic(ws / f"{ENCLAVE}.sig", signed.sigstruct.pack())
        write_atomic(ws / STATUS_NAME, b"built")
    except OSError as exc:
        raise PylosError(f"cannot write the build output: {exc}") from None
    return BuildResult(signed.mr_enclave.hex(), signed.mr_signer.hex(), len(trusted),
                       manifest.enclave_size)

