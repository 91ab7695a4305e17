"""Fuzzing `pylos sigstruct-view`, seeded with the real SIGSTRUCTs (fortanix rust-sgx test data
and a SIGSTRUCT signed with a public test key)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzzlib import FuzzStats, Mutator, base_seed, check, check_cli, cli_inputs, fuzz, iterations
from fuzzlib import run_all as run_cli

from pylos.cli.sign_cmds import sigstruct_fields
from pylos.errors import about
from pylos.sgx.sigstruct import Sigstruct

from support import TESTDATA

SEEDS = ("test_enclave.sig", "sig1.sigstruct.bin")
# vendor, date, swdefined, exponent, miscselect, cet attributes, isvprodid, isvsvn
FIELDS = ((16, 4), (20, 4), (40, 4), (512, 4), (900, 4), (908, 1), (1024, 2), (1026, 2))


def seeds() -> list[bytes]:
    return [(TESTDATA / "sigstruct" / name).read_bytes() for name in SEEDS]


def target(data: bytes) -> None:
    with about("app.sig"):
        sigstruct_fields(Sigstruct.unpack(data))


@pytest.fixture(scope="module")
def stats(tmp_path_factory: pytest.TempPathFactory) -> FuzzStats:
    mutator = Mutator(seeds(), base_seed() + 10, fields=lambda _: FIELDS)
    return fuzz("sigstruct-view", target, mutator, iterations(5000),
                tmp_path_factory.mktemp("sigstruct-findings"))


def test_in_process(stats: FuzzStats) -> None:
    check(stats)


def test_cli(stats: FuzzStats, tmp_path: Path) -> None:
    files = []
    for index, data in enumerate(cli_inputs(stats, seeds()[0], 4)):
        files.append(f"sig-{index}.sig")
        (tmp_path / files[-1]).write_bytes(data)
    for file, result in zip(files, run_cli([["sigstruct-view", f] for f in files], tmp_path),
                            strict=True):
        check_cli(result, file)
