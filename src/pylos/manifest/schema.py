"""The manifest schema: every key Gramine accepts, with its type, checked by dotted path.

Mirrors Gramine's `manifest_check.py` (voluptuous): unknown keys are rejected so that a
misspelled option fails at build time, enumerations must match exactly, integers, booleans and
strings are type-checked, size and mask strings are only checked to be strings. Every problem is
reported with its dotted path (`sgx.trusted_files[2].sha256`), all of them at once.
"""

from __future__ import annotations

from collections.abc import Callable

from pylos.errors import InputError
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

    Checker = Callable[[Any, str, list[str]], None]

LOG_LEVELS = ("none", "error", "warning", "debug", "trace", "all")


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)
    shown = repr(value) if not isinstance(value, dict | list) else ""
    return f"{kind} {shown}".rstrip()


def _typed(expected: type, name: str) -> Checker:
    def check(value: Any, path: str, errors: list[str]) -> None:
        # bool is an int in Python but not in TOML.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            errors.append(f"{path}: expected {name}, got {_describe(value)}")

    return check


Str = _typed(str, "a string")
Int = _typed(int, "an integer")
Bool = _typed(bool, "a boolean")


def Enum(*choices: str) -> Checker:
    def check(value: Any, path: str, errors: list[str]) -> None:
        if value not in choices:
            allowed = ", ".join(f'"{c}"' for c in choices)
            errors.append(f"{path}: expected one of {allowed}, got {_describe(value)}")

    return check


def Const(expected: Any, message: str) -> Checker:
    def check(value: Any, path: str, errors: list[str]) -> None:
        if value != expected or type(value) is not type(expected):
            errors.append(f"{path}: {message}")

    return check


def Anything(value: Any, path: str, errors: list[str]) -> None:
    """Accepts any value (Gramine does not validate `sys.ioctl_structs`)."""


def List(item: Checker, non_empty: bool = False) -> Checker:
    def check(value: Any, path: str, errors: list[str]) -> None:
        if not isinstance(value, list):
            errors.append(f"{path}: expected an array, got {_describe(value)}")
            return
        if non_empty and not value:
            errors.append(f"{path}: must not be an empty array")
        for i, element in enumerate(value):
            item(element, f"{path}[{i}]", errors)

    return check


def Map(item: Checker) -> Checker:
    """A table with arbitrary key names, each value checked by `item`."""

    def check(value: Any, path: str, errors: list[str]) -> None:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a table, got {_describe(value)}")
            return
        for key, element in value.items():
            item(element, _join(path, key), errors)

    return check


def OneOf(*alternatives: Checker, expected: str) -> Checker:
    """Accept the first alternative that has no errors; otherwise report `expected`."""

    def check(value: Any, path: str, errors: list[str]) -> None:
        table_attempts = []
        for alternative in alternatives:
            attempt: list[str] = []
            alternative(value, path, attempt)
            if not attempt:
                return
            if isinstance(alternative, Table):
                table_attempts.append(attempt)
        # A table is reported against the closest table form: its own, more precise errors.
        if isinstance(value, dict) and table_attempts:
            errors.extend(min(table_attempts, key=len))
        else:
            errors.append(f"{path}: expected {expected}, got {_describe(value)}")

    return check


class Table:
    """A table with a fixed set of keys; unknown keys are errors. (A plain class: `pylos run`
    imports this schema, and generating a dataclass costs start-up time.)"""

    def __init__(self, fields: dict[str, Checker], required: tuple[str, ...] = (),
                 rules: list[Callable[[dict, str, list[str]], None]] | None = None) -> None:
        self.fields, self.required, self.rules = fields, required, rules or []

    def __call__(self, value: Any, path: str, errors: list[str]) -> None:
        if not isinstance(value, dict):
            errors.append(f"{path or 'manifest'}: expected a table, got {_describe(value)}")
            return
        for key in self.required:
            if key not in value:
                errors.append(f"{_join(path, key)}: required key is missing")
        for key, element in value.items():
            checker = self.fields.get(key)
            if checker is None:
                errors.append(f"{_join(path, key)}: unknown key{self._suggest(key, path)}")
            else:
                checker(element, _join(path, key), errors)
        for rule in self.rules:
            rule(value, path, errors)

    def _suggest(self, key: str, path: str) -> str:
        import difflib  # only when reporting an unknown key

        close = difflib.get_close_matches(key, self.fields, n=1, cutoff=0.7)
        return f" (did you mean '{_join(path, close[0])}'?)" if close else ""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _no_passthrough_false(value: dict, path: str, errors: list[str]) -> None:
    if value.get("passthrough") is False:
        errors.append(f"{path}.passthrough: 'passthrough = false' is not allowed (no deny-lists)")


EnvValue = OneOf(
    Str,
    Table({"value": Str}, required=("value",)),
    Table({"passthrough": Bool}, required=("passthrough",), rules=[_no_passthrough_false]),
    expected='a string, { value = "..." } or { passthrough = true }',
)

MOUNT_TYPES = ("chroot", "tmpfs", "encrypted", "untrusted_shm")
_MOUNT_FIELDS: dict[str, Checker] = {
    "type": Enum(*MOUNT_TYPES),
    "uri": Str,
    "key_name": Str,
    "enable_recovery": Bool,
}
# pylos_read_only (pylos's own): a chroot mount read-only even below an allowed directory, as
# a workspace's image/, build/ and run/ under its /host mount
Mount = Table({"path": Str, **_MOUNT_FIELDS, "pylos_read_only": Bool}, required=("path",))
# pylos's own root type "union": the uri's files (trusted) below, a layer in enclave memory
# above, as Occlum's unionfs root (docs/occlum.md)
RootMount = Table({**_MOUNT_FIELDS, "type": Enum(*MOUNT_TYPES, "union")})

TrustedFile = OneOf(
    Str,
    Table({"uri": Str, "sha256": Str}, required=("uri",)),
    expected='a "file:" URI string or a { uri, sha256 } table',
)


def _one_secret_destination(value: dict, path: str, errors: list[str]) -> None:
    given = [k for k in ("set_key", "env", "file") if k in value]
    if len(given) != 1:
        errors.append(f"{path}: expected exactly one of set_key, env, file (where the secret "
                      f"goes), got {', '.join(given) or 'none'}")


# pylos's own keys (attestation before the program starts: `pylos.attest.prestart`); kept
# in a `pylos.` namespace so that Gramine manifests stay valid.
PylosOptions = Table({
    "ratls": Table({"cert": Str, "key": Str}, required=("cert", "key")),
    "secret_provisioning": Table(
        {"server": Str, "ca": Str, "set_key": Str, "env": Str, "file": Str},
        required=("ca",), rules=[_one_secret_destination]),
})

CpuFeature3 = Enum("unspecified", "disabled", "required")
CpuFeature2 = Enum("disabled", "required")

MANIFEST_SCHEMA = Table(
    {
        "loader": Table(
            {
                "entrypoint": Table({"uri": Str, "sha256": Str}, required=("uri",)),
                "argv": List(Str, non_empty=True),
                "argv_src_file": Str,
                "insecure__use_cmdline_argv": Bool,
                "env": Map(EnvValue),
                "env_src_file": Str,
                "insecure__use_host_env": Bool,
                "uid": Int,
                "gid": Int,
                "insecure__disable_aslr": Bool,
                "log_level": Enum(*LOG_LEVELS),
                "log_file": Str,
            },
            required=("entrypoint",),
        ),
        "libos": Table(
            {"entrypoint": Str, "check_invalid_pointers": Bool}, required=("entrypoint",)
        ),
        "fs": Table(
            {
                "mounts": List(Mount),
                "root": RootMount,
                "start_dir": Str,
                "insecure__keys": Map(Str),
            },
            required=("mounts",),
        ),
        "sgx": Table(
            {
                "debug": Bool,
                "edmm_enable": Bool,
                "enclave_size": Str,
                "max_threads": Int,
                "insecure__rpc_thread_num": Int,
                "use_exinfo": Bool,
                "insecure__allow_memfaults_without_exinfo": Bool,
                "cpu_features": Table(
                    {
                        "avx": CpuFeature3,
                        "avx512": CpuFeature3,
                        "amx": CpuFeature3,
                        "mpx": CpuFeature2,
                        "pkru": CpuFeature2,
                    }
                ),
                "isvprodid": Int,
                "isvsvn": Int,
                "seal_key": Table({"flags_mask": Str, "xfrm_mask": Str, "misc_mask": Str}),
                "trusted_files": List(TrustedFile),
                "allowed_files": List(Str),
                "file_check_policy": Enum("strict", "allow_all_but_log"),
                "remote_attestation": Enum("none", "dcap"),
                # EPID (Gramine ≤ 1.5's templates still name them; Intel retired EPID)
                "ra_client_spid": Str,
                "ra_client_linkable": Bool,
                "preheat_enclave": Bool,
                "enable_stats": Bool,
                "profile": Table(
                    {
                        "enable": Enum("none", "main", "all"),
                        "mode": Enum("aex", "ocall_inner", "ocall_outer"),
                        "with_stack": Bool,
                        "frequency": Int,
                    }
                ),
                "vtune_profile": Bool,
            }
        ),
        "sys": Table(
            {
                "stack": Table({"size": Str}),
                "brk": Table({"max_size": Str}),
                "fds": Table({"limit": Int}),
                "disallow_subprocesses": Bool,
                "enable_sigterm_injection": Bool,
                "insecure__allow_eventfd": Bool,
                "experimental__enable_flock": Bool,
                "enable_extra_runtime_domain_names_conf": Bool,
                "allowed_ioctls": List(
                    Table({"request_code": Int, "struct": Str}, required=("request_code",))
                ),
                "ioctl_structs": Map(Anything),
                "debug__mock_syscalls": List(
                    Table({"name": Str, "return": Int}, required=("name",))
                ),
            }
        ),
        "pylos": PylosOptions,
    },
    required=("loader", "libos", "fs"),
)


def validation_errors(manifest: dict) -> list[str]:
    """Every schema violation of `manifest`, each prefixed with its dotted path."""
    errors: list[str] = []
    MANIFEST_SCHEMA(manifest, "", errors)
    return errors


def check_manifest(manifest: dict, source: str = "manifest") -> None:
    """Raise InputError (exit status 1) listing every schema violation, Gramine-style."""
    from pylos.manifest.legacy import migration_hints

    hints = migration_hints(manifest)
    if hints:
        raise InputError(f"{source}: this manifest uses older Gramine syntax that pylos (as "
                         "Gramine ≥ 1.4) does not read:\n  " + "\n  ".join(hints))
    errors = validation_errors(manifest)
    if errors:
        raise InputError(
            f"{source}: manifest failed validation:\n  " + "\n  ".join(errors)
        )
