"""Fuzzing the Occlum.json reader (`pylos build`, `start`, ...) and the bom reader and planner
(`pylos copy-bom`), seeded with what the Occlum examples use: the Occlum.json of `pylos init`
(examples/occlum-*: `pylos init` then `pylos build`) and their boms (examples/occlum-*/*.yaml
with the shipped base.yaml).

The bom target plans and applies in a sandbox: the examples' host paths (/usr/...) are re-rooted
under a small fake host tree, and a copied directory outside the sandbox is refused, so that a
mutated bom cannot copy the real host's /usr (or /) into the image."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
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

from pylos.errors import InputError
from pylos.workspace import bom
from pylos.workspace.bom import apply_plan, plan_bom
from pylos.workspace.config import TEMPLATE, load_config

from support import EXAMPLES

BOMS = (EXAMPLES / "occlum-hello" / "hello.yaml", EXAMPLES / "occlum-python" / "python.yaml",
        bom.TEMPLATES / "base.yaml")
YAML_TOKENS = (*TEXT_TOKENS, b"- ", b": ", b"targets:", b"copy:", b"files:", b"dirs:",
               b"mkdirs:", b"createlinks:", b"includes:", b"- name: ", b"rename: ", b"hash: ",
               b"!!str ", b"!!int ", b"!!timestamp ", b"? ", b"|\n", b">\n", b"---\n")


def json_structured(rng: random.Random, data: bytes) -> bytes:
    try:
        tree = json.loads(data)
    except ValueError:
        return data
    return json.dumps(mutate_tree(rng, tree), indent=rng.choice((None, 4))).encode()


def yaml_structured(rng: random.Random, data: bytes) -> bytes:
    try:
        tree = yaml.safe_load(data)
    except (yaml.YAMLError, ValueError):
        return data
    return yaml.safe_dump(mutate_tree(rng, tree)).encode()


def occlum_seeds() -> list[bytes]:
    """The Occlum.json `pylos init` writes (as examples/occlum-* use it), and one with every
    optional part: a hostfs and a ramfs mount, env, more entry points."""
    full = json.loads(json.dumps(TEMPLATE))
    full["mount"] += [{"target": "/tmp", "type": "ramfs"}, {"target": "/proc", "type": "procfs"}]
    full["entry_points"] += ["/usr/bin"]
    full["env"]["untrusted"] += ["PATH"]
    full["feature"].update({"enable_edmm": False, "io_uring": 0})
    return [(json.dumps(TEMPLATE, indent=4) + "\n").encode(), json.dumps(full).encode()]


@pytest.fixture(scope="module")
def occlum_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("occlum-fuzz")


def occlum_target(work: Path) -> Callable[[bytes], None]:
    path = work / "Occlum.json"

    def target(data: bytes) -> None:  # what `pylos build` reads first
        path.write_bytes(data)
        load_config(path)

    return target


@pytest.fixture(scope="module")
def occlum_stats(occlum_work: Path) -> FuzzStats:
    mutator = Mutator(occlum_seeds(), base_seed() + 40, tokens=TEXT_TOKENS,
                      structured=json_structured)
    return fuzz("occlum-json", occlum_target(occlum_work), mutator, iterations(4000),
                occlum_work / "findings")


def test_occlum_json_in_process(occlum_stats: FuzzStats) -> None:
    check(occlum_stats)


def test_occlum_json_corpus(occlum_work: Path) -> None:
    check(replay("occlum-json", occlum_target(occlum_work), occlum_work / "corpus-findings"))


def test_occlum_json_cli(occlum_stats: FuzzStats, tmp_path: Path) -> None:
    """`pylos build` in a directory with the mutated Occlum.json and no image: a rejected
    configuration exits 1 naming Occlum.json; an accepted one gets as far as the image."""
    workspaces = []
    for index, data in enumerate(cli_inputs(occlum_stats, occlum_seeds()[0], 4)):
        workspaces.append(tmp_path / f"ws{index}")
        workspaces[-1].mkdir()
        (workspaces[-1] / "Occlum.json").write_bytes(data)
    results = [run_cli([["build"]], ws)[0] for ws in workspaces]
    for result in results:
        if result.returncode == 2:  # the configuration was accepted: no image/ to build
            assert "image" in result.stderr and "does not exist" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
        else:
            check_cli(result, "Occlum.json")


# ---- bom --------------------------------------------------------------------------------------

def make_sandbox(box: Path) -> None:
    """box/ws/image (the --root), the examples' relative sources next to ws (../hello_world,
    ../hello.py) and a small fake host tree for their absolute ones."""
    (box / "ws").mkdir(parents=True)
    (box / "hello_world").write_text("#!/bin/sh\necho Hello World\n")
    (box / "hello.py").write_text("print('Hello')\n")
    lib = box / "host" / "usr" / "lib" / "python3.11"
    (lib / "encodings").mkdir(parents=True)
    (lib / "test").mkdir()
    (box / "host" / "usr" / "bin").mkdir(parents=True)
    (box / "host" / "usr" / "bin" / "python3.11").write_text("#!/bin/false\n")
    (lib / "os.py").write_text("# os\n")
    (lib / "encodings" / "utf_8.py").write_text("# utf-8\n")
    (lib / "test" / "t.py").write_text("# excluded\n")
    os.symlink("os.py", lib / "os_link.py")  # kept as a link (inside the copied tree)
    os.symlink(str(lib / "encodings"), lib / "enc_abs")  # absolute: copied as what it is


def bom_seeds() -> list[bytes]:
    return [path.read_bytes().replace(b" /usr/", b" ${FUZZ_HOST}/usr/") for path in BOMS]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    box = tmp_path_factory.mktemp("bom-fuzz")
    make_sandbox(box)
    return box


@pytest.fixture(scope="module")
def bom_target(sandbox: Path) -> Iterator[Callable[[bytes], None]]:
    """`pylos copy-bom -f bom.yaml --root image` in-process, confined to the sandbox."""
    ws, real_copy_dir = sandbox / "ws", bom.Planner.copy_dir
    path, root = ws / "bom.yaml", ws / "image"

    def copy_dir(self: bom.Planner, source: str, dest_dir: str, where: str,
                 excludes: list[str]) -> None:
        real = os.path.realpath(source.rstrip("/") or "/")
        if real != str(sandbox) and not real.startswith(f"{sandbox}/"):
            raise InputError(f"{where}: (fuzz sandbox) not copying '{source}' from the host")
        real_copy_dir(self, source, dest_dir, where, excludes)

    def target(data: bytes) -> None:  # what `pylos copy-bom -f bom.yaml --root image` does
        if root.exists():
            shutil.rmtree(root)
        path.write_bytes(data)
        apply_plan(plan_bom(path, root, []))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bom.Planner, "copy_dir", copy_dir)
        patch.setenv("FUZZ_HOST", str(sandbox / "host"))
        patch.setenv("PYTHON_VERSION", "3.11")
        yield target


@pytest.fixture(scope="module")
def bom_stats(bom_target: Callable[[bytes], None], sandbox: Path) -> FuzzStats:
    mutator = Mutator(bom_seeds(), base_seed() + 50, tokens=YAML_TOKENS,
                      structured=yaml_structured)
    return fuzz("bom", bom_target, mutator, iterations(1500), sandbox / "findings")


def test_bom_in_process(bom_stats: FuzzStats) -> None:
    check(bom_stats)


def test_bom_corpus(bom_target: Callable[[bytes], None], sandbox: Path) -> None:
    check(replay("bom", bom_target, sandbox / "corpus-findings"))


def test_bom_cli(bom_stats: FuzzStats, sandbox: Path) -> None:
    """copy-bom --dry-run (a rejected bom fails in the plan, before the image is touched)."""
    ws = sandbox / "ws"
    env = {"FUZZ_HOST": str(sandbox / "host"), "PYTHON_VERSION": "3.11"}
    inputs = [data for data in cli_inputs(bom_stats, bom_seeds()[0], 5)
              if b"/.." not in data and b"../.." not in data]  # the CLI has no sandbox
    files = []
    for index, data in enumerate(inputs):
        files.append(f"bom-{index}.yaml")
        (ws / files[-1]).write_bytes(data)
    commands = [["copy-bom", "-f", f, "--root", "image", "--dry-run"] for f in files]
    for file, result in zip(files, run_cli(commands, ws, env), strict=True):
        check_cli(result, file)
