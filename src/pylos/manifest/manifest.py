"""A Gramine manifest: parse, fill Gramine's defaults, validate, expand trusted files, dump."""

from __future__ import annotations

import os
from collections.abc import Callable

from pylos import install
from pylos.errors import InputError, PylosError, about
from pylos.hashing import HashCache, ProgressCallback, read_bytes
from pylos.manifest.sizes import parse_size
from pylos.manifest.trusted import expand_trusted_files
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

CPU_FEATURE_DEFAULTS = {
    "avx": "unspecified",
    "avx512": "unspecified",
    "amx": "unspecified",
    "mpx": "disabled",
    "pkru": "disabled",
}


def _table(parent: dict, key: str) -> dict | None:
    """`parent[key]`, created empty if absent; None if present but not a table."""
    value = parent.setdefault(key, {})
    return value if isinstance(value, dict) else None


def fill_defaults(data: dict) -> None:
    """Gramine's `Manifest.__init__` defaults, plus pylos's `loader.entrypoint`."""
    sgx = _table(data, "sgx")
    if sgx is not None:
        edmm = sgx.setdefault("edmm_enable", False)
        sgx.setdefault("trusted_files", [])
        sgx.setdefault("max_threads", 4)
        sgx.setdefault("isvprodid", 0)
        sgx.setdefault("isvsvn", 0)
        sgx.setdefault("remote_attestation", "none")
        sgx.setdefault("debug", False)
        sgx.setdefault("enable_stats", False)
        sgx.setdefault("enclave_size", "1024G" if edmm is True else "256M")
        sgx.setdefault("use_exinfo", False)
        features = _table(sgx, "cpu_features")
        if features is not None:
            for name, default in CPU_FEATURE_DEFAULTS.items():
                features.setdefault(name, default)
        trusted = sgx["trusted_files"]
        if isinstance(trusted, list):
            sgx["trusted_files"] = [_normalise_trusted(e, i) for i, e in enumerate(trusted)]
    loader = _table(data, "loader")
    if loader is not None:
        if loader.get("entrypoint") == install.LIBOS_URI:
            # Gramine ≤ 1.6's spelling, `loader.entrypoint = "file:{{ gramine.libos }}"`
            loader["entrypoint"] = {"uri": install.LIBOS_URI}
        entrypoint = _table(loader, "entrypoint")
        if entrypoint is not None:
            entrypoint.setdefault("uri", install.LIBOS_URI)
            if entrypoint["uri"] == install.LIBOS_URI and "sha256" not in entrypoint:
                entrypoint["sha256"] = install.libos_hash()


def _normalise_trusted(entry: Any, index: int) -> dict:
    if isinstance(entry, str):
        return {"uri": entry}
    if isinstance(entry, dict):
        return entry
    raise InputError(
        f"sgx.trusted_files[{index}]: expected a URI string or a {{ uri, sha256 }} table, "
        f"got {entry!r}"
    )


def _parse_toml(text: str, what: str) -> dict:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{what}: {exc}") from None
    except RecursionError:
        raise InputError(f"{what}: arrays or tables nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise InputError(f"{what}: {exc}") from None


class Manifest:
    """A manifest as a TOML-shaped dict, with Gramine's defaults filled in."""

    def __init__(self, data: dict, source: str = "manifest") -> None:
        self.data = data
        self.source = source
        fill_defaults(self.data)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def loads(cls, text: str, source: str = "manifest") -> Manifest:
        """Parse TOML text; InputError (exit status 1) naming `source` if it is not TOML."""
        data = _parse_toml(text, f"{source}: failed to parse manifest")
        with about(source):
            return cls(data, source)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read and parse a manifest file: PylosError (2) if it cannot be read, InputError
        (1) if it is not UTF-8 TOML."""
        try:
            raw = read_bytes(os.fspath(path))
        except OSError as exc:
            raise PylosError(f"cannot read manifest '{path}': {exc.strerror or exc}") from None
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not a UTF-8 text manifest (byte {exc.start} is "
                             f"{raw[exc.start]:#04x})") from None
        return cls.loads(text, str(path))

    @classmethod
    def from_template(cls, text: str, variables: dict[str, Any], source: str = "<string>",
                      search_dir: Path | None = None) -> Manifest:
        from pylos.manifest import template

        rendered = template.render(text, variables, source, search_dir)
        data = _parse_toml(rendered, f"{source}: failed to parse manifest template")
        with about(source):
            return cls(data, source)

    # ---- processing ---------------------------------------------------------------------
    def check(self) -> None:
        from pylos.manifest import schema

        schema.check_manifest(self.data, self.source)

    def expand_all_trusted_files(
        self,
        chroot: Path | None = None,
        cache: HashCache | None = None,
        progress: Callable[[int], ProgressCallback | None] | None = None,
    ) -> None:
        entries = self.sgx.get("trusted_files", [])
        if not isinstance(entries, list):
            raise InputError(f"{self.source}: sgx.trusted_files must be an array")
        self.sgx["trusted_files"] = expand_trusted_files(entries, chroot, cache, progress)

    def dumps(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.data)

    def copy(self) -> Manifest:
        import copy  # here: `pylos run` never copies a manifest

        clone = Manifest.__new__(Manifest)
        clone.data, clone.source = copy.deepcopy(self.data), self.source
        return clone

    # ---- typed accessors (valid after check()) --------------------------------------------
    @property
    def sgx(self) -> dict:
        return self.data["sgx"]

    @property
    def enclave_size(self) -> int:
        return parse_size(self.sgx["enclave_size"], "sgx.enclave_size")

    @property
    def max_threads(self) -> int:
        return self.sgx["max_threads"]

    @property
    def edmm(self) -> bool:
        return self.sgx["edmm_enable"]

    @property
    def debug(self) -> bool:
        return self.sgx["debug"]

    @property
    def trusted_files(self) -> list[dict]:
        return self.sgx["trusted_files"]
