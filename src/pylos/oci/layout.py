"""The OCI image layout, written deterministically and read back (OCI image-spec v1.0).

An image is a tar holding `oci-layout`, `index.json` and `blobs/sha256/<digest>`: the image
manifest (JSON), the image config (JSON) and one gzip-compressed tar per layer. A layer's
`diff_id` (in the config) is the SHA-256 of the uncompressed tar, its digest (in the manifest)
that of the gzip stream. Everything is written so that the same inputs give the same bytes:
entries sorted, owner 0:0 without names, gzip without a name or time, JSON with sorted keys.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pylos.errors import InputError, PylosError

OCI_LAYOUT_VERSION = "1.0.0"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
GZIP_LEVEL = 3  # level 6 takes twice as long for layers ~5% smaller


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Entry:
    """One layer entry: a regular file (copied from `source`, or `data`), a directory or a
    symbolic link; `mode` holds the permission bits."""

    kind: str                   # "file", "dir" or "symlink"
    mode: int = 0o755
    source: str | None = None   # host file whose bytes a "file" holds
    data: bytes | None = None   # ... or these bytes
    target: str = ""            # a symlink's target
    mtime: int = 0


@dataclass
class Layer:
    """The entries of one layer by path inside the image (no leading slash). Parent
    directories are added implicitly (mode 0755)."""

    comment: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def add(self, path: str, entry: Entry) -> None:
        path = path.strip("/")
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            existing = self.entries.get(parent)
            if existing is None:
                self.entries[parent] = Entry("dir")
            elif existing.kind != "dir":
                raise PylosError(f"image path /{parent} is a {existing.kind}, but /{path} "
                                 "needs it to be a directory")
        previous = self.entries.get(path)
        if previous is not None and previous.kind == "dir" and entry.kind == "dir":
            return  # a directory named twice (implicitly, then explicitly)
        self.entries[path] = entry


class _HashingWriter(io.RawIOBase):
    """A write-only stream that forwards to `out` and hashes what passes."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.sha256, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.out.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


@dataclass(frozen=True)
class Blob:
    digest: str     # "sha256:<hex>"
    size: int
    path: Path      # where the bytes are, until the image tar is written


def _tarinfo(path: str, entry: Entry, epoch: int | None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path + "/" if entry.kind == "dir" else path)
    info.mode = entry.mode & 0o7777
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = entry.mtime if epoch is None else min(entry.mtime, epoch)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE,
                 "symlink": tarfile.SYMTYPE}[entry.kind]
    info.linkname = entry.target
    return info


def write_layer(layer: Layer, directory: Path, epoch: int | None) -> tuple[Blob, str]:
    """Write `layer` as a gzip tar blob in `directory`: (blob, diff_id)."""
    fd, name = tempfile.mkstemp(prefix=".layer-", dir=directory)
    with os.fdopen(fd, "wb") as out:
        compressed = _HashingWriter(out)
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=GZIP_LEVEL,  # type: ignore[arg-type]
                           mtime=0, filename="") as gz:
            plain = _HashingWriter(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path in sorted(layer.entries):
                    entry = layer.entries[path]
                    info = _tarinfo(path, entry, epoch)
                    if entry.kind != "file":
                        tar.addfile(info)
                    elif entry.data is not None:
                        info.size = len(entry.data)
                        tar.addfile(info, io.BytesIO(entry.data))
                    else:
                        assert entry.source is not None
                        try:
                            with open(entry.source, "rb") as f:
                                info.size = os.fstat(f.fileno()).st_size
                                tar.addfile(info, f)
                        except OSError as exc:
                            raise PylosError(f"cannot read '{entry.source}' (for /{path}): "
                                             f"{exc.strerror}") from None
        out.flush()
        os.fsync(out.fileno())
    digest = compressed.sha256.hexdigest()
    final = directory / digest
    os.replace(name, final)
    return Blob(f"sha256:{digest}", compressed.size, final), f"sha256:{plain.sha256.hexdigest()}"


def write_json_blob(value: Any, directory: Path) -> tuple[Blob, bytes]:
    data = canonical_json(value)
    digest = hashlib.sha256(data).hexdigest()
    (directory / digest).write_bytes(data)
    return Blob(f"sha256:{digest}", len(data), directory / digest), data


def write_image_tar(output: Path, index: dict, blobs: list[Blob], epoch: int | None) -> None:
    """The OCI layout as one tar at `output`, atomically (temp file, fsync, rename)."""
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                when = epoch or 0
                for dirname in ("blobs", "blobs/sha256"):
                    tar.addfile(_tarinfo(dirname, Entry("dir", mtime=when), epoch))
                for blob in sorted(set(blobs), key=lambda b: b.digest):
                    info = _tarinfo(f"blobs/sha256/{blob.digest.removeprefix('sha256:')}",
                                    Entry("file", 0o644, mtime=when), epoch)
                    info.size = blob.size
                    with open(blob.path, "rb") as f:
                        tar.addfile(info, f)
                for member, data in (("index.json", canonical_json(index)),
                                     ("oci-layout", canonical_json(
                                         {"imageLayoutVersion": OCI_LAYOUT_VERSION}))):
                    info = _tarinfo(member, Entry("file", 0o644, mtime=when), epoch)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(name, 0o644)
        os.replace(name, output)
    except BaseException:
        os.unlink(name)
        raise


# ---- reading -------------------------------------------------------------------------------

@dataclass
class ImageArchive:
    """A docker-save or OCI-layout tar opened for reading: config and layer members."""

    path: Path
    tar: tarfile.TarFile
    kind: str                       # "oci" or "docker-save"
    config: dict
    layers: list[str]               # member names, lowest layer first
    layer_digests: list[str | None]  # expected sha256 of each member's bytes (OCI), if known
    diff_ids: list[str]
    ref: str | None = None

    def member_bytes(self, name: str) -> bytes:
        try:
            member = self.tar.getmember(name)
        except KeyError:
            raise self.error(f"'{name}' is missing") from None
        f = self.tar.extractfile(member)
        if f is None:
            raise self.error(f"'{name}' is not a regular file")
        return f.read()

    def error(self, message: str) -> PylosError:
        return InputError(f"{self.path}: {message}")

    def close(self) -> None:
        self.tar.close()

    def __enter__(self) -> ImageArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def open_layer(self, index: int) -> Iterator[tuple[tarfile.TarFile, list[tarfile.TarInfo]]]:
        """Layer `index` (decompressed) and its members, after checking its digest and
        diff_id."""
        name = self.layers[index]
        data = self.member_bytes(name)
        expected = self.layer_digests[index]
        if expected is not None and f"sha256:{hashlib.sha256(data).hexdigest()}" != expected:
            raise self.error(f"layer {index + 1} ({name}) does not match its digest {expected}")
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as exc:
                raise self.error(f"layer {index + 1} ({name}): bad gzip data: {exc}") from None
        elif data[:4] == b"\x28\xb5\x2f\xfd":
            raise self.error(f"layer {index + 1} ({name}) is zstd-compressed; pylos reads "
                             "uncompressed and gzip layers (convert it with `skopeo copy "
                             "--dest-compress-format gzip`)")
        diff_id = f"sha256:{hashlib.sha256(data).hexdigest()}"
        if self.diff_ids[index] != diff_id:
            raise self.error(f"layer {index + 1} ({name}): its content is {diff_id}, the "
                             f"config's diff_id is {self.diff_ids[index]}")
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as layer:
                members = layer.getmembers()
                yield layer, members
        except tarfile.TarError as exc:
            raise self.error(f"layer {index + 1} ({name}) is not a tar: {exc}") from None


def _json(archive_path: Path, raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{archive_path}: {what} is not JSON: {exc}") from None


def _blob_name(digest: Any, archive: Path, what: str) -> str:
    if not (isinstance(digest, str) and digest.startswith("sha256:")
            and len(digest) == 71 and all(c in "0123456789abcdef" for c in digest[7:])):
        raise InputError(f"{archive}: {what}: unsupported digest {digest!r} (expected "
                         "sha256:<64 hex digits>)")
    return f"blobs/sha256/{digest[7:]}"


def open_image(path: Path) -> ImageArchive:
    """Open a docker-save tar (manifest.json) or an OCI layout tar (index.json)."""
    try:
        tar = tarfile.open(path, mode="r:*")  # noqa: SIM115 (the ImageArchive closes it)
    except OSError as exc:
        raise PylosError(f"cannot read '{path}': {exc.strerror or exc}") from None
    except tarfile.TarError as exc:
        raise InputError(f"{path}: not a tar archive: {exc}") from None
    try:
        return _read_image(path, tar)
    except BaseException:
        tar.close()
        raise


def _read_image(path: Path, tar: tarfile.TarFile) -> ImageArchive:
    try:
        names = {m.name.removeprefix("./"): m.name for m in tar.getmembers()}
    except tarfile.TarError as exc:
        raise InputError(f"{path}: not a tar archive: {exc}") from None

    def read(name: str, what: str) -> Any:
        try:
            member = tar.getmember(names.get(name, name))
            f = tar.extractfile(member)
        except KeyError:
            f = None
        if f is None:
            raise InputError(f"{path}: {what} ('{name}') is missing")
        return _json(path, f.read(), what)

    if "index.json" in names:
        index = read("index.json", "index.json")
        manifest_ref = _pick_manifest(index, path, read)
        manifest = read(_blob_name(manifest_ref.get("digest"), path, "manifest"),
                        "the image manifest")
        config_ref = manifest.get("config") if isinstance(manifest, dict) else None
        if not isinstance(config_ref, dict) or not isinstance(manifest.get("layers"), list):
            raise InputError(f"{path}: the image manifest has no config or layers")
        config = read(_blob_name(config_ref.get("digest"), path, "config"), "the image config")
        layers = [_blob_name(layer.get("digest") if isinstance(layer, dict) else None, path,
                             f"layer {i + 1}") for i, layer in enumerate(manifest["layers"])]
        digests: list[str | None] = [f"sha256:{name.rsplit('/', 1)[1]}" for name in layers]
        kind = "oci"
        ref = (manifest_ref.get("annotations") or {}).get(REF_NAME)
    elif "manifest.json" in names:
        entries = read("manifest.json", "manifest.json")
        if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0],
                                                                                  dict):
            count = len(entries) if isinstance(entries, list) else "no"
            raise InputError(f"{path}: manifest.json must describe exactly one image "
                             f"(it has {count})")
        entry = entries[0]
        if not isinstance(entry.get("Config"), str) or not isinstance(entry.get("Layers"), list):
            raise InputError(f"{path}: manifest.json: Config or Layers missing")
        config = read(entry["Config"], "the image config")
        layers = [names.get(str(layer), str(layer)) for layer in entry["Layers"]]
        digests = [None] * len(layers)
        kind = "docker-save"
        tags = entry.get("RepoTags") or []
        ref = tags[0] if tags and isinstance(tags[0], str) else None
    else:
        raise InputError(f"{path}: neither an OCI image layout (index.json) nor a docker-save "
                         "archive (manifest.json)")
    if not isinstance(config, dict):
        raise InputError(f"{path}: the image config is not a JSON object")
    rootfs = config.get("rootfs") if isinstance(config.get("rootfs"), dict) else {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs.get("diff_ids"), list) else []
    if len(diff_ids) != len(layers):
        raise InputError(f"{path}: the config lists {len(diff_ids)} diff_ids for "
                         f"{len(layers)} layers")
    return ImageArchive(path, tar, kind, config, [names.get(n, n) for n in layers], digests,
                        [str(d) for d in diff_ids], ref)


def _pick_manifest(index: Any, path: Path, read: Any) -> dict:
    """The image manifest an index names: the only one, or the linux/amd64 one (an index of
    indexes is followed)."""
    for _depth in range(4):
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or not manifests:
            raise InputError(f"{path}: index.json lists no manifests")
        candidates = [m for m in manifests if isinstance(m, dict)]
        if len(candidates) > 1:
            candidates = [m for m in candidates if (m.get("platform") or {}).get(
                "architecture") == "amd64" and (m.get("platform") or {}).get("os") == "linux"]
        if len(candidates) != 1:
            raise InputError(f"{path}: index.json lists {len(manifests)} manifests and not "
                             "exactly one for linux/amd64")
        chosen = candidates[0]
        if chosen.get("mediaType") != MEDIA_INDEX:
            return chosen
        index = read(_blob_name(chosen.get("digest"), path, "index"), "a nested index")
    raise InputError(f"{path}: index.json nests indexes too deeply")
