"""`Occlum.json`: Occlum's instance configuration, read strictly, mapped to manifest values.

Every key Occlum knows is accepted. The ones pylos acts on are listed in SUPPORTED; the rest
(LibOS heap and kernel stack sizes, KSS, AMX/PKRU, EDMM, io_uring...) have no meaning without
Occlum's LibOS or SGX hardware and are named in one warning. A key Occlum does not know is an
error naming its dotted path, so a misspelling never silently falls back to a default.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pylos.errors import InputError, PylosError

SIZE = re.compile(r"^([0-9]+) *(B|KB|MB|GB|TB)$")
UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}

# Occlum's whole schema (gen_internal_conf + the template): dotted key -> expected JSON type.
KNOWN: dict[str, type | tuple[type, ...]] = {
    "resource_limits": dict,
    "resource_limits.user_space_size": str,
    "resource_limits.user_space_max_size": str,
    "resource_limits.kernel_space_heap_size": str,
    "resource_limits.kernel_space_heap_max_size": str,
    "resource_limits.kernel_space_stack_size": str,
    "resource_limits.max_num_of_threads": int,
    "resource_limits.init_num_of_threads": int,
    "process": dict,
    "process.default_stack_size": str,
    "process.default_heap_size": str,
    "process.default_mmap_size": str,
    "entry_points": list,
    "env": dict,
    "env.default": list,
    "env.untrusted": list,
    "metadata": dict,
    "metadata.product_id": int,
    "metadata.version_number": int,
    "metadata.debuggable": bool,
    "metadata.disable_log": bool,
    "metadata.enable_kss": bool,
    "metadata.family_id": dict,
    "metadata.family_id.high": str,
    "metadata.family_id.low": str,
    "metadata.ext_prod_id": dict,
    "metadata.ext_prod_id.high": str,
    "metadata.ext_prod_id.low": str,
    "feature": dict,
    "feature.amx": int,
    "feature.pkru": int,
    "feature.io_uring": int,
    "feature.enable_edmm": bool,
    "feature.enable_posix_shm": bool,
    "mount": list,
}
SUPPORTED = {
    "resource_limits.user_space_size", "resource_limits.user_space_max_size",
    "resource_limits.max_num_of_threads", "process.default_stack_size",
    "process.default_heap_size", "entry_points", "env.default",
    "env.untrusted", "metadata.product_id", "metadata.version_number", "metadata.debuggable",
    "mount",
}
REQUIRED = ("resource_limits.user_space_size", "resource_limits.max_num_of_threads",
            "process.default_stack_size", "process.default_heap_size", "entry_points",
            "metadata.product_id", "metadata.version_number", "metadata.debuggable", "mount")
MOUNT_KEYS = {"target", "type", "source", "options"}
MOUNT_TYPES = ("unionfs", "sefs", "hostfs", "ramfs", "procfs", "devfs", "ext2")
MOUNT_OPTIONS = {"layers", "MAC", "temporary", "cache_size", "disk_size", "index"}

TEMPLATE = {
    "resource_limits": {
        "user_space_size": "300MB",
        "kernel_space_heap_size": "32MB",
        "kernel_space_stack_size": "1MB",
        "max_num_of_threads": 32,
    },
    "process": {
        "default_stack_size": "4MB",
        "default_heap_size": "32MB",
        "default_mmap_size": "100MB",
    },
    "entry_points": ["/bin"],
    "env": {"default": ["OCCLUM=yes"], "untrusted": ["EXAMPLE"]},
    "metadata": {
        "product_id": 0,
        "version_number": 0,
        "debuggable": True,
        "enable_kss": False,
        "family_id": {"high": "0x0", "low": "0x0"},
        "ext_prod_id": {"high": "0x0", "low": "0x0"},
    },
    "feature": {"amx": 0, "pkru": 0},
    "mount": [
        {"target": "/", "type": "unionfs", "options": {"layers": [
            {"target": "/", "type": "sefs", "source": "./build/mount/__ROOT",
             "options": {"MAC": ""}},
            {"target": "/", "type": "sefs", "source": "./run/mount/__ROOT"},
        ]}},
        {"target": "/host", "type": "hostfs", "source": "."},
    ],
}


MAX_SIZE_DIGITS = 20  # more is no memory size, and int() refuses past 4300 digits
SHOW_MAX = 60  # characters of an offending value quoted in a message


def _show(value: Any) -> str:
    """`value` as JSON for a message, cut short: the message stays one readable line."""
    text = json.dumps(value)
    return text if len(text) <= SHOW_MAX else text[:SHOW_MAX] + "..."


def parse_size(value: Any, key: str) -> int:
    """Occlum's size strings: digits, optional spaces, B/KB/MB/GB/TB (binary, case-sensitive)."""
    match = SIZE.match(value) if isinstance(value, str) else None
    if match is None or len(match.group(1)) > MAX_SIZE_DIGITS:
        raise InputError(f"Occlum.json: {key}: expected a size like \"300MB\" (an integer and "
                         f"one of B, KB, MB, GB, TB), got {_show(value)}")
    return int(match.group(1)) * UNITS[match.group(2)]


@dataclass(frozen=True)
class Mount:
    target: str
    type: str
    source: str | None  # hostfs: relative to the workspace or absolute


@dataclass
class WorkspaceConfig:
    user_space_size: int
    max_threads: int
    stack_size: int
    heap_size: int
    entry_points: list[str]
    env_default: dict[str, str]
    env_untrusted: list[str]
    product_id: int
    version_number: int
    debuggable: bool
    mounts: list[Mount] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _walk(value: Any, path: str, errors: list[str], present: list[str]) -> None:
    for key, item in value.items():
        dotted = f"{path}.{key}" if path else key
        expected = KNOWN.get(dotted)
        if expected is None:
            errors.append(f"{dotted}: unknown key")
            continue
        present.append(dotted)
        if not isinstance(item, expected) or (expected is int and isinstance(item, bool)):
            name = {dict: "an object", list: "an array", str: "a string", int: "an integer",
                    bool: "a boolean"}[expected]  # type: ignore[index]
            errors.append(f"{dotted}: expected {name}, got {_show(item)}")
        elif expected is dict:
            _walk(item, dotted, errors, present)


def _lookup(data: dict, dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        value = value[part]
    return value


def _mounts(raw: list, errors: list[str]) -> list[Mount]:
    mounts: list[Mount] = []
    has_root = False
    for i, entry in enumerate(raw):
        key = f"mount[{i}]"
        if not isinstance(entry, dict):
            errors.append(f"{key}: expected an object")
            continue
        for name in entry:
            if name not in MOUNT_KEYS:
                errors.append(f"{key}.{name}: unknown key")
        for name in entry.get("options", {}) if isinstance(entry.get("options"), dict) else ():
            if name not in MOUNT_OPTIONS:
                errors.append(f"{key}.options.{name}: unknown key")
        target, kind, source = entry.get("target"), entry.get("type"), entry.get("source")
        if not isinstance(target, str) or not target.startswith("/"):
            errors.append(f"{key}.target: expected an absolute path, got {_show(target)}")
            continue
        if kind not in MOUNT_TYPES:
            errors.append(f"{key}.type: expected one of {', '.join(MOUNT_TYPES)}, got "
                          f"{_show(kind)}")
            continue
        if kind == "unionfs" and target == "/":
            has_root = True  # the image + writable layer: pylos's own (docs/occlum.md)
        elif kind == "hostfs":
            if not isinstance(source, str) or not source:
                errors.append(f"{key}.source: a hostfs mount needs a host directory")
                continue
            mounts.append(Mount(target, kind, source))
        elif kind == "ramfs":
            mounts.append(Mount(target, kind, None))
        elif kind in ("procfs", "devfs"):
            continue  # every pylos enclave has its own /proc and a minimal /dev
        else:
            errors.append(f"{key}: a {kind} mount at {target} is not supported by pylos (the "
                          "root image and its writable layer are; extra sefs/ext2 are not)")
    if not has_root:
        errors.append('mount: needs the root file system entry {"target": "/", "type": '
                      '"unionfs", ...} (as in the template of `pylos init`)')
    return mounts


def parse_config(data: Any, source: str = "Occlum.json") -> WorkspaceConfig:
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a JSON object at the top level")
    errors: list[str] = []
    present: list[str] = []
    _walk(data, "", errors, present)
    for key in REQUIRED:
        if key not in present:
            errors.append(f"{key}: required key missing")
    if errors:
        raise InputError(f"{source}: invalid configuration:\n  " + "\n  ".join(errors))

    entry_points = _lookup(data, "entry_points")
    for i, entry in enumerate(entry_points):
        if not isinstance(entry, str) or not entry.startswith("/") or ".." in entry.split("/"):
            errors.append(f"entry_points[{i}]: expected an absolute path without '..', got "
                          f"{_show(entry)}")
    env_default: dict[str, str] = {}
    for i, entry in enumerate(data.get("env", {}).get("default", [])):
        if not isinstance(entry, str) or "=" not in entry or entry.startswith("="):
            errors.append(f"env.default[{i}]: expected \"NAME=value\", got {_show(entry)}")
            continue
        name, _, value = entry.partition("=")
        env_default[name] = value
    untrusted = data.get("env", {}).get("untrusted", [])
    for i, name in enumerate(untrusted):
        if not isinstance(name, str) or not name or "=" in name:
            errors.append(f"env.untrusted[{i}]: expected a variable name, got {_show(name)}")
    mounts = _mounts(data["mount"], errors)
    sizes = {}
    for key in ("resource_limits.user_space_size", "process.default_stack_size",
                "process.default_heap_size", "resource_limits.user_space_max_size"):
        if key not in present:
            continue  # only the optional user_space_max_size may be absent (REQUIRED)
        try:
            sizes[key] = parse_size(_lookup(data, key), key)
        except InputError as exc:
            errors.append(str(exc).removeprefix("Occlum.json: "))
    threads = data["resource_limits"]["max_num_of_threads"]
    if threads < 1:
        errors.append(f"resource_limits.max_num_of_threads: must be at least 1, got {threads}")
    for key in ("metadata.product_id", "metadata.version_number"):
        if not 0 <= _lookup(data, key) <= 0xFFFF:
            errors.append(f"{key}: must be between 0 and 65535")
    if errors:
        raise InputError(f"{source}: invalid configuration:\n  " + "\n  ".join(errors))

    ignored = [k for k in present if k not in SUPPORTED and KNOWN[k] is not dict]
    warnings = []
    if ignored:
        warnings.append(f"{source}: keys without effect under pylos (no Occlum LibOS, simulated "
                        f"SGX): {', '.join(ignored)}")
    meta = data["metadata"]
    return WorkspaceConfig(
        # Without EDMM (pylos's simulated SGX has none) Occlum takes user_space_max_size in
        # place of user_space_size when it is given.
        user_space_size=sizes.get("resource_limits.user_space_max_size",
                                  sizes.get("resource_limits.user_space_size", 0)),
        max_threads=threads,
        stack_size=sizes["process.default_stack_size"],
        heap_size=sizes["process.default_heap_size"],
        entry_points=list(entry_points),
        env_default=env_default,
        env_untrusted=list(untrusted),
        product_id=meta["product_id"],
        version_number=meta["version_number"],
        debuggable=meta["debuggable"],
        mounts=mounts,
        warnings=warnings,
    )


def load_config(path: Path) -> WorkspaceConfig:
    """Read and check `path`: PylosError (exit status 2) if it cannot be read, InputError (1)
    naming the file and the key if its content is not a valid Occlum.json."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PylosError(f"cannot read '{path}': {exc.strerror}") from None
    try:
        data = json.loads(raw.decode())
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name}: not valid JSON: not UTF-8 text (byte {exc.start} is "
                         f"{raw[exc.start]:#04x})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path.name}: not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{path.name}: not valid JSON for pylos: arrays or objects nested too "
                         "deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise InputError(f"{path.name}: not valid JSON for pylos: {exc}") from None
    return parse_config(data, str(path.name))
