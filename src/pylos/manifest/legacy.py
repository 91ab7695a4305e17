"""Gramine ≤ 1.3 manifest syntax, recognised so that an old manifest gets its migration, not
a list of schema errors: what the old key was, and what to write instead."""

from __future__ import annotations

import json
from typing import Any

from pylos.install import LIBOS_URI


def _toml_string(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else json.dumps(str(value))


def migration_hints(data: dict) -> list[str]:
    """One line for each old-syntax construct found in `data` (a parsed manifest)."""
    hints: list[str] = []
    loader = data.get("loader") if isinstance(data.get("loader"), dict) else {}
    sgx = data.get("sgx") if isinstance(data.get("sgx"), dict) else {}
    fs = data.get("fs") if isinstance(data.get("fs"), dict) else {}
    entrypoint = loader.get("entrypoint")
    if isinstance(entrypoint, str) and entrypoint != LIBOS_URI:  # Gramine's own LibOS's path
        hints.append(f"loader.entrypoint = {_toml_string(entrypoint)} is Gramine ≤ 1.3 syntax; "
                     "write loader.entrypoint = { uri = \"file:{{ gramine.libos }}\" } (or leave "
                     "it out: pylos fills it in), and name the program in libos.entrypoint")
    for key in ("trusted_files", "allowed_files"):
        entries = sgx.get(key)
        if isinstance(entries, dict):
            uris = ", ".join(_toml_string(v.get("uri") if isinstance(v, dict) else v)
                             for v in list(entries.values())[:3])
            more = ", ..." if len(entries) > 3 else ""
            hints.append(f"sgx.{key}.NAME = \"file:...\" tables are Gramine ≤ 1.3 syntax; write "
                         f"an array: sgx.{key} = [ {uris}{more} ]")
    mounts = fs.get("mount")
    if isinstance(mounts, dict):
        examples = []
        for spec in list(mounts.values())[:2]:
            if isinstance(spec, dict):
                fields = ", ".join(f"{k} = {_toml_string(v)}" for k, v in spec.items()
                                   if k in ("type", "path", "uri", "key_name"))
                examples.append(f"{{ {fields} }}")
        more = ", ..." if len(mounts) > 2 else ""
        hints.append("fs.mount.NAME.* tables are Gramine ≤ 1.3 syntax; write an array of "
                     f"mounts: fs.mounts = [ {', '.join(examples)}{more} ]")
    if "thread_num" in sgx:
        hints.append(f"sgx.thread_num is older Gramine's name; write sgx.max_threads = "
                     f"{sgx['thread_num']}")
    if "rpc_thread_num" in sgx:
        hints.append("sgx.rpc_thread_num is older Gramine's name; write "
                     f"sgx.insecure__rpc_thread_num = {sgx['rpc_thread_num']}")
    if "trusted_checksum" in sgx:
        hints.append("sgx.trusted_checksum.NAME is older Gramine syntax; write the hash in the "
                     "entry: sgx.trusted_files = [ { uri = \"file:...\", sha256 = \"...\" } ]")
    return hints
