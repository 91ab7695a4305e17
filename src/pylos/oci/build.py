"""`pylos oci build`: a signed pylos app as an OCI image whose entrypoint is `pylos run APP`.

No base image is pulled (nothing here needs a registry): the image is made of this host's own
files, in three layers, lowest first:

1. **python**: the interpreter pylos runs on, its standard library (without its tests, IDLE,
   tkinter, ensurepip, lib2to3 and the static-link `config-*` directory) and every shared
   library that it, its extension modules and those of layer 2 load (`pylos.workspace.elfdeps`),
   at their host paths, symbolic links included (`/lib` -> `usr/lib` stays a link);
2. **pylos**: a venv at `/opt/pylos` holding the pylos package and its dependencies (the
   distributions `pylos` requires, transitively: not pytest, ruff or pip) and `bin/pylos`;
3. **app**: `APP.manifest.sgx`, `APP.sig` and every trusted file, checked against the manifest
   hashes while copied: relative URIs under the working directory (`/app` by default),
   absolute ones at their paths; plus the directories `fs.mounts` binds and the allowed files
   that exist.

File contents, modes and modification times are the host's (the standard library's `.pyc`
files stay valid); owners are 0:0; `SOURCE_DATE_EPOCH`, when set, clamps every time. The same
inputs give a byte-identical image.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import stat
import sys
import sysconfig
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pylos.errors import InputError, PylosError
from pylos.oci.layout import (
    MEDIA_CONFIG,
    MEDIA_INDEX,
    MEDIA_LAYER_GZIP,
    MEDIA_MANIFEST,
    REF_NAME,
    Blob,
    Entry,
    Layer,
    write_image_tar,
    write_json_blob,
    write_layer,
)

VENV = "/opt/pylos"
DEFAULT_WORKDIR = "/app"
PATH_ENV = f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STDLIB_SKIP_TOP = {"site-packages", "dist-packages", "idlelib", "tkinter", "turtledemo",
                   "ensurepip", "lib2to3", "pydoc_data"}
STDLIB_SKIP_ANYWHERE = {"test", "tests"}
# Extension modules of what is left out (tkinter's pulls in Tcl/Tk and X11) and test modules.
STDLIB_SKIP_MODULES = ("_tkinter.", "_test", "_xxtest", "xxlimited")
MAX_SYMLINKS = 40


def _mtime(st: os.stat_result) -> int:
    return int(st.st_mtime)


class HostFiles:
    """Adds host files to a layer at their host paths, reproducing the symbolic links met on
    the way, so that the image resolves each path as the host does."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        self.elf_files: list[str] = []

    def add(self, path: str, hops: int = 0) -> None:
        if hops > MAX_SYMLINKS:
            raise PylosError(f"{path}: too many levels of symbolic links")
        path = os.path.normpath(os.path.abspath(path))
        current = ""
        parts = [p for p in path.split("/") if p]
        for depth, part in enumerate(parts):
            candidate = f"{current}/{part}"
            try:
                st = os.lstat(candidate)
            except OSError as exc:
                raise PylosError(f"cannot add '{path}' to the image: {exc.strerror}") from None
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(candidate)
                self.layer.add(candidate, Entry("symlink", 0o777, target=target,
                                                mtime=_mtime(st)))
                resolved = os.path.join(os.path.dirname(candidate), target)
                self.add(os.path.join(resolved, *parts[depth + 1 :]), hops + 1)
                return
            current = candidate
        st = os.stat(current)
        if stat.S_ISDIR(st.st_mode):
            self.layer.add(current, Entry("dir", stat.S_IMODE(st.st_mode), mtime=_mtime(st)))
        elif stat.S_ISREG(st.st_mode):
            self.layer.add(current, Entry("file", stat.S_IMODE(st.st_mode), source=current,
                                          mtime=_mtime(st)))
            if _is_elf(current):
                self.elf_files.append(current)
        else:
            raise PylosError(f"'{current}' is neither a file nor a directory")

    def add_tree(self, top: str, skip_top: Collection[str] = (),
                 skip_anywhere: Collection[str] = ()) -> None:
        """`top` and everything below it (links to directories are added as links only)."""
        self.add(top)
        for directory, dirs, files in os.walk(top):
            keep = []
            for name in sorted(dirs):
                if name in skip_anywhere or (directory == top and (
                        name in skip_top or name.startswith("config-"))):
                    continue
                full = os.path.join(directory, name)
                if os.path.islink(full):
                    st = os.lstat(full)
                    self.layer.add(full, Entry("symlink", 0o777, target=os.readlink(full),
                                               mtime=_mtime(st)))
                else:
                    keep.append(name)
            dirs[:] = keep
            for name in files:
                if ".opt-" in name and name.endswith(".pyc"):
                    continue  # -O / -OO byte code: pylos never runs optimised
                if name.startswith(STDLIB_SKIP_MODULES):
                    continue
                self.add(os.path.join(directory, name))


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _add_elf_dependencies(files: HostFiles, elf_files: list[str]) -> None:
    from pylos.workspace.elfdeps import Resolver

    resolver = Resolver()
    for path in sorted(set(elf_files)):
        deps = resolver.resolve(path)
        if deps is None:
            continue
        # A library missing here (say _tkinter's libtk) is missing on the host too: the
        # module fails to import in the image as it does outside.
        for lib in [deps.interp_host, *deps.libraries]:
            if lib is not None:
                files.add(lib)


def _requirement_names(dist: metadata.Distribution) -> list[str]:
    names = []
    for requirement in dist.requires or []:
        if "extra ==" in requirement.replace("extra==", "extra =="):
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        if match:
            names.append(match.group(0))
    return names


def runtime_distributions() -> list[metadata.Distribution]:
    """The installed distributions `pylos` needs at run time, transitively (not itself)."""
    found: dict[str, metadata.Distribution] = {}
    queue = _requirement_names(metadata.distribution("pylos"))
    while queue:
        name = re.sub(r"[-_.]+", "-", queue.pop()).lower()
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # required only under a marker this interpreter does not meet
        found[name] = dist
        queue += _requirement_names(dist)
    return [found[name] for name in sorted(found)]


def python_layer(files_for_deps: list[str]) -> Layer:
    layer = Layer("pylos oci build: the Python runtime and shared libraries")
    files = HostFiles(layer)
    executable = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    files.add(executable)  # libpython, if shared, comes with its ELF dependencies
    stdlib = sysconfig.get_paths(vars={"base": sys.base_prefix,
                                       "platbase": sys.base_exec_prefix})["stdlib"]
    files.add_tree(stdlib, STDLIB_SKIP_TOP, STDLIB_SKIP_ANYWHERE)
    _add_elf_dependencies(files, files.elf_files + files_for_deps)
    layer.add("tmp", Entry("dir", 0o1777))
    layer.add("root", Entry("dir", 0o700))
    return layer


def _site_packages_in_image() -> str:
    return f"{VENV}/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"


def pylos_layer() -> tuple[Layer, list[str]]:
    """The venv at /opt/pylos; also the host paths of the ELF files it holds."""
    import pylos

    layer = Layer("pylos oci build: pylos and its dependencies in a venv at " + VENV)
    site = _site_packages_in_image()
    elf_files: list[str] = []

    def copy(host: Path, inside: str) -> None:
        st = host.stat()
        layer.add(inside, Entry("file", stat.S_IMODE(st.st_mode), source=str(host),
                                mtime=_mtime(st)))
        if _is_elf(str(host)):
            elf_files.append(str(host))

    for dist in runtime_distributions():
        for record in dist.files or []:
            if record.parts[0] == ".." or record.suffix == ".pth":
                continue  # console scripts outside site-packages; path hooks
            host = Path(str(dist.locate_file(record)))
            if host.is_file():
                copy(host, f"{site}/{record.as_posix()}")
    package = Path(pylos.__file__).resolve().parent
    for host in sorted(package.rglob("*")):
        if host.is_file():
            copy(host, f"{site}/pylos/{host.relative_to(package).as_posix()}")
    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    layer.add(f"{VENV}/pyvenv.cfg", Entry("file", 0o644, data=(
        f"home = {os.path.dirname(python)}\ninclude-system-site-packages = false\n"
        f"version = {'.'.join(map(str, sys.version_info[:3]))}\n").encode()))
    layer.add(f"{VENV}/bin/python3", Entry("symlink", 0o777, target=python))
    layer.add(f"{VENV}/bin/python", Entry("symlink", 0o777, target="python3"))
    layer.add(f"{VENV}/bin/pylos", Entry("file", 0o755, data=(
        f"#!{VENV}/bin/python3 -I\nimport sys\n\nfrom pylos.cli.main import main\n\n"
        "sys.exit(main())\n").encode()))
    return layer, elf_files


@dataclass
class BuiltImage:
    output: Path
    manifest_digest: str
    ref: str
    layers: list[tuple[str, int, int]]  # (comment, entries, compressed size)
    mr_enclave: str


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def app_layer(app: str, workdir: str) -> tuple[Layer, str, str]:
    """(layer, APP's path in the image, MRENCLAVE) for the signed app `app` (its base path,
    or its .manifest.sgx)."""
    from pylos.runtime.load import app_base, load_enclave

    base = app_base(app)
    loaded = load_enclave(base, mode="sgx")  # signature, measurement, LibOS: this pylos's
    app_dir = Path(base).resolve().parent
    name = Path(base).name
    layer = Layer(f"pylos oci build: {name} (manifest, signature, trusted files)")
    host_files = HostFiles(layer)

    def inside(path: str) -> str:
        return path if path.startswith("/") else f"{workdir}/{path}"

    def host(path: str) -> str:
        return path if path.startswith("/") else str(app_dir / path)

    for suffix in (".manifest.sgx", ".sig"):
        source = app_dir / (name + suffix)
        layer.add(f"{workdir}/{name}{suffix}", Entry("file", 0o644, source=str(source),
                                                     mtime=_mtime(source.stat())))
    manifest = loaded.manifest
    for entry in manifest.trusted_files:
        path = entry["uri"].removeprefix("file:")
        try:
            actual = _sha256_file(host(path))
        except OSError as exc:
            raise PylosError(f"trusted file '{host(path)}': {exc.strerror}") from None
        if actual != entry["sha256"]:
            raise InputError(f"trusted file '{host(path)}' changed since {name} was signed "
                             f"(sha256 {actual}, the manifest says {entry['sha256']}): "
                             "re-sign the app")
        if path.startswith("/"):
            host_files.add(path)
        else:
            st = os.stat(host(path))
            layer.add(inside(path), Entry("file", stat.S_IMODE(st.st_mode), source=host(path),
                                          mtime=_mtime(st)))
    # Mount points and allowed files: the view binds them, so they must exist.
    fs = manifest.data.get("fs", {})
    uris = [m.get("uri", "") for m in fs.get("mounts", []) if m.get("type", "chroot") ==
            "chroot"] + [e if isinstance(e, str) else e.get("uri", "")
                         for e in manifest.sgx.get("allowed_files", [])]
    for uri in uris:
        if not uri.startswith("file:"):
            continue
        path = uri.removeprefix("file:").rstrip("/") or "/"
        target = inside(path).rstrip("/")
        if os.path.isdir(host(path)):
            if target and target not in layer.entries:
                layer.add(target, Entry("dir"))
        elif os.path.isfile(host(path)) and target not in layer.entries:
            st = os.stat(host(path))
            layer.add(target, Entry("file", stat.S_IMODE(st.st_mode), source=host(path),
                                    mtime=_mtime(st)))
    assert loaded.mr_enclave is not None
    return layer, inside(name), loaded.mr_enclave.hex()


def _epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise PylosError(f"SOURCE_DATE_EPOCH={value!r} is not a unix time") from None


def build_image(app: str, output: Path, ref: str | None = None,
                workdir: str | None = None) -> BuiltImage:
    """Write the OCI image of signed app `app` to the tar `output`."""
    workdir = workdir or DEFAULT_WORKDIR
    if not workdir.startswith("/") or ".." in workdir.split("/"):
        raise PylosError(f"--workdir {workdir!r}: expected an absolute path without '..'")
    workdir = os.path.normpath(workdir)
    epoch = _epoch()
    app_files, app_path, mr_enclave = app_layer(app, workdir)
    venv, venv_elf = pylos_layer()
    layers = [python_layer(venv_elf), venv, app_files]
    name = Path(app_path).name
    ref = ref or f"localhost/pylos-{name.lower()}:latest"
    created = datetime.datetime.fromtimestamp(epoch or 0, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".pylos-oci-", dir=output.parent) as tmp:
            blob_dir = Path(tmp)
            written = [write_layer(layer, blob_dir, epoch) for layer in layers]
            config = {
                "architecture": "amd64", "os": "linux", "created": created,
                "config": {
                    "Entrypoint": [f"{VENV}/bin/pylos", "run", app_path],
                    "WorkingDir": workdir,
                    "Env": [PATH_ENV, "HOME=/root"],
                    "Labels": {"org.pylos.app": name, "org.pylos.mrenclave": mr_enclave},
                },
                "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in written]},
                "history": [{"created": created, "created_by": layer.comment}
                            for layer in layers],
            }
            config_blob, _ = write_json_blob(config, blob_dir)
            manifest = {
                "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                "config": {"mediaType": MEDIA_CONFIG, "digest": config_blob.digest,
                           "size": config_blob.size},
                "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": blob.digest,
                            "size": blob.size} for blob, _ in written],
            }
            manifest_blob, _ = write_json_blob(manifest, blob_dir)
            index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [{
                "mediaType": MEDIA_MANIFEST, "digest": manifest_blob.digest,
                "size": manifest_blob.size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {REF_NAME: ref},
            }]}
            blobs: list[Blob] = [blob for blob, _ in written] + [config_blob, manifest_blob]
            write_image_tar(output, index, blobs, epoch)
    except OSError as exc:
        raise PylosError(f"cannot write the image '{output}': {exc}") from None
    return BuiltImage(output, manifest_blob.digest, ref,
                      [(layer.comment, len(layer.entries), blob.size)
                       for layer, (blob, _) in zip(layers, written, strict=True)], mr_enclave)
