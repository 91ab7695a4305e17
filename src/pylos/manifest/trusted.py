"""Trusted-file expansion: directory URIs become file lists, every file gets its SHA-256.

Gramine's rules (`expand_all_trusted_files`): only `file:` URIs; a URI ending in `/` names a
directory and expands recursively, entries in sorted order, not descending into symlinked
directories, keeping only regular files (symlinks to them included) that can be read; a
directory URI without the trailing `/` is an error, and so is a `/` URI naming a file; the same
URI is kept once (first position wins) and two different hashes for it are an error; entries
that already carry a `sha256` are not re-hashed. Relative URIs stay relative (to the working
directory); with a chroot, URIs must be absolute and are looked up inside it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pylos.errors import InputError, PylosError
from pylos.hashing import HashCache, ProgressCallback, hash_files
from pylos.install import LIBOS_URI, libos_hash
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def uri_to_path(uri: str, key: str) -> str:
    """The host path of a `file:` URI; `key` names the manifest entry in errors."""
    if not uri.startswith("file:"):
        raise InputError(f"{key}: Unsupported URI type: {uri!r} (expected a 'file:' URI)")
    return uri[len("file:") :]


def _host_path(path: str, chroot: Path | None, key: str) -> str:
    if chroot is None:
        return path
    if not path.startswith("/"):
        raise InputError(f"{key}: with --chroot, trusted file paths must be absolute: {path!r}")
    return str(chroot) + path


def _walk_directory(host_dir: str, rel: str, out: list[tuple[str, str]]) -> None:
    """Append (relative name, host path) of every readable regular file below `host_dir`."""
    try:
        entries = sorted(os.scandir(host_dir), key=lambda e: e.name)
    except OSError:
        return  # unreadable directories are skipped, as Gramine does
    for entry in entries:
        name = rel + entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                _walk_directory(entry.path, name + "/", out)
            elif entry.is_file(follow_symlinks=True) and os.access(entry.path, os.R_OK):
                out.append((name, entry.path))
        except OSError:
            continue


class MissingTrustedFile(InputError):
    """A trusted-file entry whose file is not there (at build time, when hashes are made)."""

    def __init__(self, key: str, uri: str, host: str) -> None:
        super().__init__(f"{key}: Missing trusted file: '{host}' ({uri!r}); fix: build or "
                         "copy the file there, correct the URI, or remove the entry")
        self.key, self.uri, self.host = key, uri, host


def expand_trusted_files(
    entries: list[dict],
    chroot: Path | None = None,
    cache: HashCache | None = None,
    progress: Callable[[int], ProgressCallback | None] | None = None,
) -> list[dict]:
    """Return the expanded `sgx.trusted_files` list: `{uri, sha256}` per file, in order.

    `entries` are `{uri}` / `{uri, sha256}` tables (string forms already normalised).
    `progress(total)` may return a callback that receives (done, total, nbytes) while hashing.
    """
    expanded: dict[str, dict] = {}
    to_hash: dict[str, str] = {}  # uri -> host path
    for index, entry in enumerate(entries):
        key = f"sgx.trusted_files[{index}]"
        uri = entry["uri"]
        if uri == LIBOS_URI:  # "file:{{ gramine.libos }}", as older templates trust it
            expanded.setdefault(uri, {"uri": uri, "sha256": libos_hash()})
            continue
        path = uri_to_path(uri, key)
        host = _host_path(path, chroot, key)
        if uri.endswith("/"):
            if "sha256" in entry:
                raise InputError(f"{key}: a directory entry cannot carry sha256: {uri!r}")
            if not os.path.isdir(host):
                if os.path.exists(host.rstrip("/")):
                    raise InputError(f"{key}: URI ends with '/' but is not a directory: {uri!r}")
                raise MissingTrustedFile(key, uri, host)
            found: list[tuple[str, str]] = []
            _walk_directory(host, "", found)
            for name, file_host in found:
                _add(expanded, to_hash, {"uri": uri + name}, file_host, key)
        else:
            if os.path.isdir(host):
                raise InputError(f"{key}: directory URI must end with '/': {uri!r}")
            # With its sha256 given, the file is checked when it is opened, as Gramine does:
            # it may be made later (a build step, a file the program itself writes first).
            if "sha256" not in entry and not os.path.isfile(host):
                raise MissingTrustedFile(key, uri, host)
            _add(expanded, to_hash, dict(entry), host, key)

    if to_hash:
        cache = cache if cache is not None else HashCache.disabled()
        callback = progress(len(to_hash)) if progress is not None else None
        try:
            digests = hash_files(to_hash.values(), cache, callback)
        except OSError as exc:
            raise PylosError(f"cannot hash trusted file: {exc}") from exc
        for uri, host in to_hash.items():
            expanded[uri]["sha256"] = digests[host]
        cache.save()
    return list(expanded.values())


def _add(expanded: dict[str, dict], to_hash: dict[str, str], entry: dict, host: str,
         key: str) -> None:
    uri = entry["uri"]
    previous = expanded.get(uri)
    if previous is None:
        expanded[uri] = entry
        if "sha256" not in entry:
            to_hash[uri] = host
        return
    if "sha256" in entry and "sha256" in previous and entry["sha256"] != previous["sha256"]:
        raise InputError(f"{key}: two different sha256 values for trusted file {uri!r}")
    if "sha256" in entry and "sha256" not in previous:
        previous["sha256"] = entry["sha256"]
        to_hash.pop(uri, None)
