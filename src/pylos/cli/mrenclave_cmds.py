"""`pylos mrenclave explain A B`: why two enclave measurements differ (`pylos.sgx.explain`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from pylos.sgx.explain import Change, Explanation, explain, load_build

EXIT_DIFFER = 3  # 1 and 2 already mean rejected input and usage error


@click.group("mrenclave")
def mrenclave_group() -> None:
    """Inspect enclave measurements."""


def _value(value: Any) -> str:
    if value is None:
        return "(absent)"
    return json.dumps(value) if isinstance(value, str | list | dict) else str(value)


def _section(title: str, changes: list[Change], absent_a: str = "(absent)",
             absent_b: str = "(absent)") -> list[str]:
    if not changes:
        return []
    lines = [f"{title} ({len(changes)}):"]
    for change in changes:
        a = absent_a if change.a is None else _value(change.a)
        b = absent_b if change.b is None else _value(change.b)
        lines.append(f"  {change.name}: {a} → {b}")
    return lines


def _trusted_section(changes: list[Change]) -> list[str]:
    if not changes:
        return []
    lines = [f"trusted files ({len(changes)}):"]
    for change in changes:
        if change.a is None:
            lines.append(f"  {change.name}: only in B (sha256 {change.b})")
        elif change.b is None:
            lines.append(f"  {change.name}: only in A (sha256 {change.a})")
        else:
            lines.extend([f"  {change.name}:", f"    A sha256 {change.a}",
                          f"    B sha256 {change.b}"])
    return lines


def render_text(result: Explanation) -> list[str]:
    a, b = result.a, result.b
    lines = [f"A: {a.source}", f"B: {b.source}"]
    if result.equal:
        lines.append(f"MRENCLAVE is the same: {a.mr_enclave.hex()}")
    else:
        lines += ["MRENCLAVE differs:", f"  A {a.mr_enclave.hex()}", f"  B {b.mr_enclave.hex()}"]
    lines += _section("manifest keys", result.manifest_keys)
    lines += _trusted_section(result.trusted_files)
    lines += _section("enclave", result.enclave)
    lines += _section("layout", result.layout, "(no such area)", "(no such area)")
    if result.first_difference is not None:
        diff = result.first_difference
        where = "" if diff.offset is None else f" at {diff.offset:#x}"
        area = "" if diff.area is None else f" ({diff.area})"
        lines += [f"first differing measurement record: #{diff.index} {diff.operation}{where}"
                  f"{area}", f"  {diff.detail}"]
    lines += _section("SIGSTRUCT", result.sigstruct)
    lines += [f"note: {note}" for note in result.notes]
    return lines


@mrenclave_group.command("explain")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for CI).")
def explain_cmd(a: Path, b: Path, as_json: bool) -> None:
    """Say why the measurements of builds A and B differ.

    A and B: two .sig files, two .manifest.sgx files (each with the APP.sig beside it, if any)
    or two build directories (each holding one APP.manifest.sgx + APP.sig). With manifests:
    the manifest keys and trusted files that changed, the enclave size, threads, attributes,
    misc select, the layout, and the first measurement record (ECREATE/EADD/EEXTEND) that
    differs; with .sig files only: what the SIGSTRUCTs say.

    Exit status: 0 same MRENCLAVE (other SIGSTRUCT differences, e.g. date or signer, are still
    listed), 3 MRENCLAVE differs, 1 an input is rejected (not a SIGSTRUCT, a malformed
    manifest), 2 usage error (a path that is none of these, an unreadable file)."""
    result = explain(load_build(a), load_build(b))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo("\n".join(render_text(result)))
    sys.exit(0 if result.equal else EXIT_DIFFER)


COMMANDS = [mrenclave_group]
