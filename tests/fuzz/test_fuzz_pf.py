"""Fuzzing `pylos pf decrypt`, seeded with the Gramine-made protected files (v1 and v2, every
size), and an interrupted flush (HAS_PENDING_WRITE and its journal) made by pylos.

Besides raw mutations, a structure-aware one re-seals the metadata node with the key (an
attacker holding the key, or a pylos bug writing it): sizes, paths, root keys and flags that
pass the MAC must still be checked."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest
from fuzzlib import FuzzStats, Mutator, base_seed, check, check_cli, cli_inputs, fuzz, iterations
from fuzzlib import run_all as run_cli

import pylos.pf.file as pf_file
from pylos.pf import ProtectedFile, convert
from pylos.pf.format import (
    FLAG_HAS_PENDING_WRITE,
    MD_PATH,
    MD_ROOT_KEY,
    MD_SIZE,
    NODE_SIZE,
    PATH_MAX_SIZE,
    open_metadata,
)

from support import TESTDATA

GT = TESTDATA / "gramine-pf"
KEY = (GT / "wrap_key.bin").read_bytes()
SIZES = {"empty": 0, "small": 100, "medium": 10000, "large": 401288}
JOURNAL_SPLIT = 16384  # the journal target's input: the PF's 16384 bytes, then the journal
RECORD = 8 + NODE_SIZE
INTERESTING_SIZES = (0, 1, 3071, 3072, 3073, 3072 + 4096, 3072 + 96 * 4096,
                     3072 + 96 * 4096 + 1, 10000, 10001, 2**32, 2**63, 2**64 - 1)


def seeds() -> list[bytes]:
    return [(GT / f"enc_v{v}_{size}.pf").read_bytes() for v in (1, 2) for size in SIZES]


def pf_fields(data: bytes) -> list[tuple[int, int]]:
    """Header: major, minor, feature flags (v2)."""
    return [(8, 1), (9, 1), (58, 1)]


def reseal(rng: random.Random, data: bytes) -> bytes:
    """The file with its metadata decrypted, one field changed and sealed again (v2)."""
    try:
        md = open_metadata(data[:NODE_SIZE], KEY, None, "seed")
    except Exception:
        return data
    choice = rng.random()
    if choice < 0.4:
        struct.pack_into("<Q", md.plain, MD_SIZE, rng.choice(INTERESTING_SIZES))
    elif choice < 0.6:
        name = bytes(rng.choice(b"/.a\xff") for _ in range(rng.randrange(PATH_MAX_SIZE + 1)))
        md.plain[MD_PATH:MD_PATH + PATH_MAX_SIZE] = name.ljust(PATH_MAX_SIZE, b"\0")[
            :PATH_MAX_SIZE]
    elif choice < 0.8:
        md.plain[MD_ROOT_KEY + rng.randrange(32)] ^= 1 << rng.randrange(8)
    else:
        md.plain[rng.randrange(len(md.plain))] = rng.randrange(256)
    flags = FLAG_HAS_PENDING_WRITE if rng.random() < 0.1 else 0
    return md.seal(KEY, bytes(rng.randrange(256) for _ in range(32)), flags) + data[NODE_SIZE:]


def decrypt(data: bytes, work: Path, journal: bytes | None = None) -> None:
    """`pylos pf decrypt -i IN -o OUT` in-process (every output is removed again)."""
    source = work / "in.pf"
    source.write_bytes(data)
    journal_path = Path(str(source) + pf_file.JOURNAL_SUFFIX)
    if journal is not None:
        journal_path.write_bytes(journal)
    elif journal_path.exists():
        journal_path.unlink()
    target = work / "out"
    try:
        convert.decrypt_files(convert.plan(str(source), str(target)), KEY, False)
    finally:
        if target.exists():
            target.unlink()


def pending_write_sample(work: Path) -> bytes:
    """enc_v2_medium.pf with a flush interrupted after its journal was written and the flag set
    (deterministic: the node keys come from a seeded generator), then the journal."""
    rng = random.Random(7)
    path = work / "pending.pf"
    path.write_bytes((GT / "enc_v2_medium.pf").read_bytes())

    class Crash(BaseException):
        pass

    def crash(*_args: object) -> None:
        raise Crash

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "urandom", rng.randbytes)
        patch.setattr(pf_file, "_write_nodes", crash)
        fd = os.open(path, os.O_RDWR)
        try:
            pf = ProtectedFile.open(fd, KEY, "encrypted/medium.bin")
            pf.write(5000, b"fuzz" * 2000)
            with pytest.raises(Crash):
                pf.flush()
        finally:
            os.close(fd)
    data = path.read_bytes()
    journal = Path(str(path) + pf_file.JOURNAL_SUFFIX).read_bytes()
    assert len(data) == JOURNAL_SPLIT and data[58] & FLAG_HAS_PENDING_WRITE and journal
    return data + journal


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pf-fuzz")


@pytest.fixture(scope="module")
def stats(work: Path) -> FuzzStats:
    mutator = Mutator(seeds(), base_seed() + 20, fields=pf_fields, structured=reseal)
    return fuzz("pf-decrypt", lambda data: decrypt(data, work), mutator, iterations(2000),
                work / "findings")


@pytest.fixture(scope="module")
def journal_stats(work: Path) -> FuzzStats:
    def fields(data: bytes) -> list[tuple[int, int]]:  # the records' node numbers
        return [(58, 1)] + [(JOURNAL_SPLIT + i, 8)
                            for i in range(0, len(data) - JOURNAL_SPLIT, RECORD)]

    def target(data: bytes) -> None:
        decrypt(data[:JOURNAL_SPLIT], work, data[JOURNAL_SPLIT:])

    def reseal_journal(rng: random.Random, data: bytes) -> bytes:
        """The journal's metadata record (the last one) re-sealed with a field changed."""
        last = len(data) - NODE_SIZE
        if last < JOURNAL_SPLIT + 8:
            return data
        return data[:last] + reseal(rng, data[last:])[:NODE_SIZE]

    mutator = Mutator([pending_write_sample(work)], base_seed() + 21, fields=fields,
                      structured=reseal_journal)
    return fuzz("pf-decrypt-journal", target, mutator, iterations(1000), work / "findings")


def test_in_process(stats: FuzzStats) -> None:
    check(stats)


def test_journal_in_process(journal_stats: FuzzStats) -> None:
    check(journal_stats)


def test_cli(stats: FuzzStats, tmp_path: Path) -> None:
    (tmp_path / "encrypted").mkdir()
    files = []
    for index, data in enumerate(cli_inputs(stats, (GT / "enc_v2_small.pf").read_bytes(), 4)):
        files.append(f"encrypted/{index}.pf")
        (tmp_path / files[-1]).write_bytes(data)
    commands = [["pf", "decrypt", "-w", str(GT / "wrap_key.bin"), "-i", f, "-o", f"{f}.out"]
                for f in files]
    for file, result in zip(files, run_cli(commands, tmp_path), strict=True):
        check_cli(result, file)
