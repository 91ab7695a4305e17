"""A small deterministic mutation fuzzer for pylos's parsers (no atheris, no coverage feedback).

`Mutator` derives inputs from real samples with a fixed-seed `random.Random`: bit flips, random
and "interesting" bytes, byte insertion and deletion, chunk duplication, truncation, splicing
with another sample, interesting values written over the format's length fields, dictionary
tokens, and (for text formats) a structure-aware mutation supplied by the target. Each input
gets 1 to 8 stacked mutations.

`fuzz` feeds every input to a target (the library function the CLI calls). The target may
return or raise `PylosError` with exit status 1 (rejected input); anything else — another
exception, a `PylosError` with another exit status (a usage error for bad *content*), a
`SystemExit`, a Rust panic surfacing as `BaseException`, or an input running longer than
`HANG_SECONDS` — is a finding. Findings are grouped by signature (exception type and the
innermost pylos source line), each kept with its smallest input, minimised, written to the
output directory, and reported with its hex.

`PYLOS_FUZZ_ITERATIONS=N` replaces every target's iteration count (long local runs);
`PYLOS_FUZZ_SEED=S` changes the fixed seed.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pylos.errors import PylosError

ITERATIONS_ENV = "PYLOS_FUZZ_ITERATIONS"
SEED_ENV = "PYLOS_FUZZ_SEED"
HANG_SECONDS = 20
HEX_LIMIT = 16 << 10  # bytes of a reproducer shown as hex in a failure message

INTERESTING = {
    1: (0, 1, 0x7F, 0x80, 0xFF, 0x10, 0x20, 0x40),
    2: (0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x100, 0x3FF, 0x400, 0x1000, 0xFFFE),
    4: (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x10000, 0xFFFFFFFE, 0x1000, 0x100000),
    8: (0, 1, 2**63 - 1, 2**63, 2**64 - 1, 0xFFFFFFFF, 0x100000000, 0x1000),
}
TEXT_TOKENS = (b'"', b"'", b"[", b"]", b"{", b"}", b",", b":", b"=", b"\n", b"\\", b"\0",
               b"\xff", b"\xc3", b"\xed\xa0\x80", b"-1", b"0", b"1e999", b"NaN", b"null",
               b"true", b"99999999999999999999999", b"9" * 5000, b"[" * 2000, b"{" * 2000,
               b"\"\\u0000\"", b"\"\\ud800\"", b"0x", b"..", b"/", b"*", b"${HOME}", b"$X",
               b"&a", b"*a", b"!!binary", b"~", b"- ", b"#", b"\t", b"\r", b"inf", b"-0",
               b"2016-12-14", b"1979-05-27T07:32:00Z")

Fields = Callable[[bytes], Sequence[tuple[int, int]]]  # data -> (offset, width) of length fields
Structured = Callable[[random.Random, bytes], bytes]


def iterations(default: int) -> int:
    """The iteration count: `default`, or PYLOS_FUZZ_ITERATIONS when set."""
    value = os.environ.get(ITERATIONS_ENV)
    return int(value) if value else default


def base_seed() -> int:
    return int(os.environ.get(SEED_ENV, "20240611"))


class Mutator:
    """Deterministic mutants of `samples` (the sequence depends only on the seed and samples)."""

    def __init__(self, samples: Sequence[bytes], seed: int, *, fields: Fields | None = None,
                 tokens: Sequence[bytes] = (), structured: Structured | None = None) -> None:
        if not samples:
            raise ValueError("a mutator needs at least one sample")
        self.samples = [bytes(s) for s in samples]
        self.rng = random.Random(seed)
        self.fields = fields
        self.tokens = list(tokens)
        self.structured = structured
        self.ops: list[Callable[[bytearray], None]] = [
            self.flip_bit, self.flip_bit, self.random_byte, self.interesting_value,
            self.insert_bytes, self.delete_range, self.duplicate_chunk, self.truncate,
            self.splice, self.overwrite_from_other,
        ]
        if fields is not None:
            self.ops += [self.length_field] * 3
        if tokens:
            self.ops += [self.insert_token] * 2

    def mutate(self) -> bytes:
        rng = self.rng
        data = bytearray(rng.choice(self.samples))
        if self.structured is not None and rng.random() < 0.4:
            data = bytearray(self.structured(rng, bytes(data)))
            if rng.random() < 0.5:
                return bytes(data)
        count = min(8, 1 + int(rng.expovariate(0.9)))
        for _ in range(count):
            rng.choice(self.ops)(data)
        return bytes(data)

    # ---- the mutations --------------------------------------------------------------------
    def _pos(self, data: bytearray, extra: int = 0) -> int:
        return self.rng.randrange(len(data) + extra) if len(data) + extra > 0 else 0

    def flip_bit(self, data: bytearray) -> None:
        if data:
            data[self._pos(data)] ^= 1 << self.rng.randrange(8)

    def random_byte(self, data: bytearray) -> None:
        if data:
            data[self._pos(data)] = self.rng.randrange(256)

    def _put(self, data: bytearray, offset: int, width: int, value: int) -> None:
        order = "little" if self.rng.random() < 0.8 else "big"
        raw = (value % (1 << (8 * width))).to_bytes(width, order)
        data[offset:offset + width] = raw[:max(0, len(data) - offset)]

    def interesting_value(self, data: bytearray) -> None:
        width = self.rng.choice((1, 2, 4, 8))
        if len(data) >= width:
            offset = self.rng.randrange(len(data) - width + 1)
            self._put(data, offset, width, self.rng.choice(INTERESTING[width]))

    def length_field(self, data: bytearray) -> None:
        assert self.fields is not None
        try:
            found = [f for f in self.fields(bytes(data)) if f[0] + f[1] <= len(data)]
        except Exception:  # the fields of an already broken input: mutate elsewhere
            found = []
        if not found:
            self.interesting_value(data)
            return
        offset, width = self.rng.choice(found)
        current = int.from_bytes(data[offset:offset + width], "little")
        choice = self.rng.random()
        if choice < 0.5:
            value = self.rng.choice(INTERESTING[width])
        elif choice < 0.8:
            value = current + self.rng.randint(-8, 8)
        else:
            value = self.rng.choice((len(data), len(data) - offset, len(data) + 1,
                                     current * 2, current // 2))
        data[offset:offset + width] = (value % (1 << (8 * width))).to_bytes(width, "little")

    def insert_bytes(self, data: bytearray) -> None:
        n = self.rng.choice((1, 1, 2, 4, 8, 16, 64))
        fill = (bytes(self.rng.randrange(256) for _ in range(n)) if self.rng.random() < 0.6
                else bytes([self.rng.choice(INTERESTING[1])]) * n)
        at = self._pos(data, 1)
        data[at:at] = fill

    def insert_token(self, data: bytearray) -> None:
        token = self.rng.choice(self.tokens)
        at = self._pos(data, 1)
        if self.rng.random() < 0.5:
            data[at:at] = token
        else:
            data[at:at + len(token)] = token

    def delete_range(self, data: bytearray) -> None:
        if data:
            at = self._pos(data)
            del data[at:at + self.rng.choice((1, 1, 2, 4, 8, 16, 64, 256))]

    def duplicate_chunk(self, data: bytearray) -> None:
        if data:
            start = self._pos(data)
            chunk = data[start:start + self.rng.choice((1, 4, 16, 64, 256))]
            at = self._pos(data, 1)
            data[at:at] = chunk

    def truncate(self, data: bytearray) -> None:
        if data:
            del data[self._pos(data):]

    def _other(self) -> bytes:
        return self.rng.choice(self.samples)

    def splice(self, data: bytearray) -> None:
        other = self._other()
        cut = self._pos(data, 1)
        data[cut:] = other[self.rng.randrange(len(other) + 1):]

    def overwrite_from_other(self, data: bytearray) -> None:
        other = self._other()
        if data and other:
            at = self._pos(data)
            n = self.rng.choice((4, 16, 64, 256))
            data[at:at + n] = other[at:at + n]


# ---- structure-aware mutation of JSON / YAML / TOML documents ------------------------------

WEIRD_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**64, -(2**63), 1.5, float("inf"), "", "x", "/", "..",
    "../../x", "/nonexistent", "300MB", "0MB", "9999999999TB", "\u0000", "a\nb", "${NOPE}",
    [], [None], {}, {"": None}, [[[]]], {"a": {"b": {"c": 1}}},
)


def _collect(node: Any, path: tuple, out: list[tuple]) -> None:
    out.append(path)
    if isinstance(node, dict):
        for key, value in node.items():
            _collect(value, (*path, key), out)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _collect(value, (*path, index), out)


def _get(node: Any, path: tuple) -> Any:
    for part in path:
        node = node[part]
    return node


def mutate_tree(rng: random.Random, tree: Any) -> Any:
    """`tree` with one node replaced, deleted, duplicated or retyped (a deep copy)."""
    import copy

    tree = copy.deepcopy(tree)
    paths: list[tuple] = []
    _collect(tree, (), paths)
    path = rng.choice(paths)
    if not path:
        return rng.choice(WEIRD_VALUES)
    parent, key = _get(tree, path[:-1]), path[-1]
    action = rng.random()
    if action < 0.45:
        parent[key] = copy.deepcopy(rng.choice(WEIRD_VALUES))
    elif action < 0.6:
        del parent[key]
    elif action < 0.75:
        value = parent[key]
        parent[key] = [value] if not isinstance(value, list) else {"k": value}
    elif action < 0.9 and isinstance(parent, dict):
        parent[rng.choice(("extra", "", "target", "type", "options", str(key) + "x"))] = \
            copy.deepcopy(parent[key])
    else:
        other = _get(tree, rng.choice(paths))
        parent[key] = copy.deepcopy(other)
    return tree


# ---- running --------------------------------------------------------------------------------

class Hang(BaseException):
    """Raised by the alarm when one input runs longer than HANG_SECONDS."""


@dataclass
class Finding:
    signature: str
    message: str
    data: bytes
    count: int = 1
    path: Path | None = None


@dataclass
class FuzzStats:
    name: str
    iterations: int = 0
    rejected: int = 0
    accepted: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    findings: dict[str, Finding] = field(default_factory=dict)
    # one input per distinct error message start, for the CLI checks
    samples: dict[str, bytes] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.name}: {self.iterations} inputs in {self.seconds:.1f} s "
                f"({self.rejected} rejected, {self.accepted} accepted, slowest "
                f"{self.slowest * 1000:.0f} ms), {len(self.findings)} distinct findings")


def _signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/pylos/" in f.filename and "/tests/" not in f.filename]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    if where is None:
        location = "?"
    else:
        short = re.sub(r"^.*/(pylos|site-packages)/", r"\1/", where.filename)
        location = f"{short}:{where.lineno}"
    return f"{type(exc).__module__}.{type(exc).__qualname__} at {location}"


def _outcome(target: Callable[[bytes], Any], data: bytes
             ) -> tuple[str, PylosError | None, str]:
    """("accepted", None, ""), ("warned", None, warning class), ("rejected", the PylosError,
    "") or ("finding", None, "signature\nmessage")."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            target(data)
        if caught:  # the CLI must not print them: keep one such input for the CLI checks
            return "warned", None, type(caught[0].message).__name__
    except PylosError as exc:
        if exc.exit_code != 1:
            return ("finding", None, f"PylosError with exit status {exc.exit_code} for "
                    f"rejected content ({_signature(exc)})\n{exc}")
        return "rejected", exc, ""
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        return "finding", None, f"{_signature(exc)}\n{type(exc).__name__}: {exc}"[:2000]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return "accepted", None, ""


def _alarm(_signum: int, _frame: Any) -> None:
    raise Hang(f"no result within {HANG_SECONDS} s")


def minimise(target: Callable[[bytes], Any], data: bytes, signature: str,
             budget: int = 400) -> bytes:
    """A smaller input with the same finding signature (chunk deletion, greedy)."""
    tries = 0
    chunk = max(1, len(data) // 2)
    while chunk >= 1 and tries < budget:
        at = 0
        while at < len(data) and tries < budget:
            candidate = data[:at] + data[at + chunk:]
            tries += 1
            kind, _, detail = _outcome(target, candidate)
            if kind == "finding" and detail.split("\n", 1)[0] == signature:
                data = candidate
            else:
                at += chunk
        chunk //= 2
    return data


def fuzz(name: str, target: Callable[[bytes], Any], mutator: Mutator, count: int,
         out_dir: Path, classify: Callable[[PylosError], str] | None = None) -> FuzzStats:
    """Run `count` mutants through `target`; findings are written to `out_dir`."""
    stats = FuzzStats(name)
    started = time.monotonic()
    for _ in range(count):
        data = mutator.mutate()
        t0 = time.monotonic()
        try:
            kind, error, detail = _outcome(target, data)
        finally:
            stats.slowest = max(stats.slowest, time.monotonic() - t0)
        stats.iterations += 1
        if kind != "finding":
            # Remember one input per kind of answer, for the CLI checks.
            if error is None:
                stats.accepted += 1
                key = "accepted" if kind == "accepted" else f"warned: {detail}"
            else:
                stats.rejected += 1
                text = classify(error) if classify else str(error)
                key = "rejected: " + re.sub(r"[0-9a-f]{8,}|\d+", "N", text)[:60]
            if len(stats.samples) < 64:
                stats.samples.setdefault(key, data)
            continue
        signature, message = detail.split("\n", 1)
        found = stats.findings.get(signature)
        if found is None:
            stats.findings[signature] = Finding(signature, message, data)
        else:
            found.count += 1
            if len(data) < len(found.data):
                found.data, found.message = data, message
    stats.seconds = time.monotonic() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, finding in enumerate(stats.findings.values()):
        finding.data = minimise(target, finding.data, finding.signature)
        finding.path = out_dir / f"{name}-finding-{index}.bin"
        finding.path.write_bytes(finding.data)
    return stats


CORPUS = Path(__file__).parent / "corpus"


def replay(name: str, target: Callable[[bytes], Any], out_dir: Path) -> FuzzStats:
    """Every file of corpus/`name`/ through `target`, judged like a fuzzer's input."""
    stats = FuzzStats(f"corpus/{name}")
    files = sorted((CORPUS / name).glob("*.bin"))
    assert files, f"no corpus in {CORPUS / name}"
    for path in files:
        kind, error, detail = _outcome(target, path.read_bytes())
        stats.iterations += 1
        if kind == "finding":
            signature, message = detail.split("\n", 1)
            stats.findings[f"{path.name}: {signature}"] = Finding(
                signature, message, path.read_bytes(), path=path)
        elif error is None:
            stats.accepted += 1
        else:
            stats.rejected += 1
    return stats


def report(stats: FuzzStats) -> str:
    lines = [stats.summary()]
    for finding in stats.findings.values():
        data = finding.data
        shown = data.hex() if len(data) <= HEX_LIMIT else data[:HEX_LIMIT].hex() + "..."
        lines += [f"- {finding.signature} ({finding.count} inputs)",
                  f"  {finding.message.splitlines()[0] if finding.message else ''}",
                  f"  reproducer: {finding.path} ({len(data)} bytes)",
                  f"  hex: {shown}"]
    return "\n".join(lines)


def check(stats: FuzzStats) -> None:
    import pytest

    print(stats.summary())
    if stats.findings:
        pytest.fail(report(stats), pytrace=False)


# ---- the CLI, as a user runs it --------------------------------------------------------------

def cli_inputs(stats: FuzzStats, seed: bytes, count: int) -> list[bytes]:
    """The unmutated seed and `count - 1` mutants that got different answers in-process (one
    that made a library warn first, if any)."""
    warned = [data for key, data in sorted(stats.samples.items()) if key.startswith("warned")]
    rejected = [data for key, data in sorted(stats.samples.items())
                if key.startswith("rejected")]
    rng = random.Random(base_seed())
    rng.shuffle(rejected)
    return [seed, *(warned[:1] + rejected)[:count - 1]]


def run_all(commands: Sequence[Sequence[str]], cwd: Path, env: dict[str, str] | None = None,
            workers: int = 2) -> list[subprocess.CompletedProcess]:
    """`pylos ARGS...` for each of `commands` in `cwd`, `workers` at a time, in order."""
    from concurrent.futures import ThreadPoolExecutor

    from support import run_pylos

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda args: run_pylos(*args, cwd=cwd, env=env), commands))


def check_cli(result: subprocess.CompletedProcess, input_name: str,
              ok_codes: tuple[int, ...] = (0,)) -> None:
    """Exit status 0 (or one of `ok_codes`) or 1; never a traceback; on error exactly one
    `ERROR: <file>: ...` line (any further lines indented details or warnings)."""
    where = f"{result.args}: exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout, where
    assert "Warning:" not in result.stderr, where  # a Python warning, with its source line
    assert result.returncode in (*ok_codes, 1), where
    if result.returncode == 0:
        return
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    errors = [line for line in lines if line.startswith("ERROR: ")]
    assert len(errors) == 1 and lines[0] == errors[0], where
    assert input_name in errors[0], where
    assert all(line.startswith(" ") for line in lines[1:]), where
