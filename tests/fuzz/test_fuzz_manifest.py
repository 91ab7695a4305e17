"""Fuzzing `pylos manifest-check`, seeded with the examples' manifests as `pylos manifest`
renders them (examples/*/*.manifest.template, with the variables their Makefiles pass)."""

from __future__ import annotations

import random
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w
from fuzzlib import (
    TEXT_TOKENS,
    FuzzStats,
    Mutator,
    base_seed,
    check,
    check_cli,
    cli_inputs,
    fuzz,
    iterations,
    mutate_tree,
    replay,
)
from fuzzlib import run_all as run_cli

from pylos.errors import PylosError
from pylos.manifest import Manifest

from support import EXAMPLES

DEFINES = {"log_level": "error", "arch_libdir": "/lib/x86_64-linux-gnu", "execdir": "/usr/bin",
           "entrypoint": "/usr/bin/python3", "port": "8080", "encrypted": "1",
           "encryption_key": "00112233445566778899aabbccddeeff", "extensions": "",
           "ra_type": "none"}
TOML_TOKENS = (*TEXT_TOKENS, b"[[", b"]]", b'"""', b"'''", b"=[", b"= {", b"0o", b"0b",
               b"+inf", b"1979-05-27", b"sgx.", b"loader.", b"fs.mounts = [")


def seeds() -> list[bytes]:
    """Every example manifest that renders here (a template needing a program that is not
    installed, e.g. redis-server for `ldd`, is left out)."""
    rendered = []
    for template in sorted(EXAMPLES.glob("*/*manifest.template")):
        try:
            manifest = Manifest.from_template(template.read_text(), DEFINES, str(template),
                                              template.parent)
        except PylosError:
            continue
        rendered.append(manifest.dumps().encode())
    assert len(rendered) >= 5, "the examples' manifests do not render"
    return rendered


def toml_structured(rng: random.Random, data: bytes) -> bytes:
    try:
        tree = tomllib.loads(data.decode())
    except (ValueError, UnicodeDecodeError):
        return data
    tree = mutate_tree(rng, tree)
    if not isinstance(tree, dict):
        return data
    try:
        return tomli_w.dumps(_no_none(tree)).encode()
    except (TypeError, ValueError):
        return data


def _no_none(value: object) -> object:
    """TOML has no null: None becomes an empty table."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: _no_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_none(v) for v in value]
    return value


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("manifest-fuzz")


def target_in(work: Path) -> Callable[[bytes], None]:
    path = work / "app.manifest"

    def target(data: bytes) -> None:  # what `pylos manifest-check` does
        path.write_bytes(data)
        Manifest.load(path).check()

    return target


@pytest.fixture(scope="module")
def stats(work: Path) -> FuzzStats:
    mutator = Mutator(seeds(), base_seed() + 30, tokens=TOML_TOKENS, structured=toml_structured)
    return fuzz("manifest-check", target_in(work), mutator, iterations(2500), work / "findings")


def test_in_process(stats: FuzzStats) -> None:
    check(stats)


def test_corpus(work: Path) -> None:
    check(replay("manifest-check", target_in(work), work / "corpus-findings"))


def test_cli(stats: FuzzStats, tmp_path: Path) -> None:
    files = []
    for index, data in enumerate(cli_inputs(stats, seeds()[0], 4)):
        files.append(f"app-{index}.manifest")
        (tmp_path / files[-1]).write_bytes(data)
    for file, result in zip(files, run_cli([["manifest-check", f] for f in files], tmp_path),
                            strict=True):
        check_cli(result, file)
