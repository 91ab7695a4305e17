"""Crash safety of flushes: a crash at any write/fsync step (with the step's write torn, or with
every write since the last fsync independently lost, as after a power cut) and a SIGKILL at
random instants of a write-heavy loop always leave the old or the new consistent state."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pf_support import GT, gt_path, open_rw, walk, wrap_key

import pylos.pf.file as pf_file
from pylos.pf import ProtectedFile, physical_size


class Crash(BaseException):
    """The simulated crash: nothing in pylos may catch it."""


class FaultyOS:
    """`os` for pylos.pf.file that crashes at mutating step `crash_at`.

    mode "kill": every completed write stays (a process crash); "torn": the crashing write lands
    half; "lose": a random subset of the writes since each fd's last fsync is undone (lost data
    past the old end of file reads as zeros), as a power cut may do.
    """

    def __init__(self, crash_at: int, mode: str, seed: int = 0) -> None:
        self.crash_at = crash_at
        self.mode = mode
        self.rng = random.Random(seed)
        self.steps = 0
        self.unsynced: dict[int, list[tuple[int, bytes, int]]] = {}  # offset, old bytes, length

    def __getattr__(self, name: str):
        return getattr(os, name)

    def _step(self) -> bool:
        crash = self.steps == self.crash_at
        self.steps += 1
        return crash

    def _record(self, fd: int, offset: int, length: int) -> None:
        self.unsynced.setdefault(fd, []).append((offset, os.pread(fd, length, offset), length))

    def _crash(self) -> None:
        if self.mode == "lose":
            for fd, undo in self.unsynced.items():
                for offset, old, length in reversed(undo):
                    if self.rng.random() < 0.5:  # bytes past the old end come back as zeros
                        os.pwrite(fd, old + bytes(length - len(old)), offset)
        raise Crash

    def pwrite(self, fd: int, data, offset: int) -> int:
        data = bytes(data)
        crash = self._step()
        if crash and self.mode == "torn":
            half = data[:max(1, len(data) // 2)]
            self._record(fd, offset, len(half))
            os.pwrite(fd, half, offset)
        if crash:
            self._crash()
        self._record(fd, offset, len(data))
        return os.pwrite(fd, data, offset)

    def pwritev(self, fd: int, buffers, offset: int) -> int:
        return self.pwrite(fd, b"".join(bytes(b) for b in buffers), offset)

    def ftruncate(self, fd: int, length: int) -> None:
        if self._step():
            self._crash()
        size = os.fstat(fd).st_size
        if length < size:
            self._record(fd, length, size - length)
        os.ftruncate(fd, length)

    def fsync(self, fd: int) -> None:
        if self._step():
            self._crash()
        os.fsync(fd)
        self.unsynced.pop(fd, None)


def _read_all(fd: int, path: str, readonly: bool) -> bytes:
    with ProtectedFile.open(fd, wrap_key(), path, readonly=readonly) as pf:
        return pf.read(0, pf.size)


def _scenario_grow(pf: ProtectedFile) -> None:
    pf.write(3072 + 5 * 4096 + 10, b"a" * 9000)
    pf.write(3072 + 100 * 4096, b"b" * 100)  # under MHT 1
    pf.write(pf.size, b"c" * 50000)  # grows into new nodes


def _scenario_shrink(pf: ProtectedFile) -> None:
    pf.write(0, b"head")
    pf.truncate(150000)
    pf.write(140000, b"tail" * 100)


SCENARIOS: dict[str, Callable[[ProtectedFile], None]] = {
    "grow": _scenario_grow, "shrink": _scenario_shrink}


def _apply(base: bytes, scenario: str) -> bytes:
    model = bytearray(base)

    class Model:
        @property
        def size(self) -> int:
            return len(model)

        def write(self, offset: int, data: bytes) -> None:
            model.extend(bytes(max(0, offset - len(model))))
            model[offset:offset + len(data)] = data

        def truncate(self, size: int) -> None:
            del model[size:]

    SCENARIOS[scenario](Model())  # type: ignore[arg-type]
    return bytes(model)


@pytest.mark.parametrize("source", ["v2", "v1"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_crash_at_every_step_of_a_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        source: str, scenario: str) -> None:
    original = (GT / f"enc_{source}_large.pf").read_bytes()
    old = (GT / "plain_large.bin").read_bytes()
    new = _apply(old, scenario)
    path = tmp_path / "large.bin"
    journal = Path(str(path) + ".pylos-journal")
    bound = gt_path("large")

    def crash_run(crash_at: int, mode: str, seed: int = 0) -> FaultyOS:
        path.write_bytes(original)
        journal.unlink(missing_ok=True)
        fd = open_rw(path)
        pf = ProtectedFile.open(fd, wrap_key(), bound)
        SCENARIOS[scenario](pf)
        faulty = FaultyOS(crash_at, mode, seed)
        monkeypatch.setattr(pf_file, "os", faulty)
        try:
            pf.flush()
        except Crash:
            pass
        finally:
            monkeypatch.setattr(pf_file, "os", os)
            if pf._journal_fd is not None:  # the process died: nothing closes cleanly
                os.close(pf._journal_fd)
            os.close(fd)
        return faulty

    steps = crash_run(10**9, "kill").steps
    assert steps >= 9  # journal truncate/write/fsync, flag, fsync, nodes, metadata, fsyncs
    outcomes = set()
    for crash_at in range(steps):
        for mode, seed in [("kill", 0), ("torn", 0), ("lose", 1), ("lose", 2), ("lose", 3)]:
            crash_run(crash_at, mode, seed)
            fd = open_rw(path)
            try:
                seen = _read_all(fd, bound, readonly=True)  # applies a journal in memory only
                assert seen in (old, new), (crash_at, mode, seed)
                assert _read_all(fd, bound, readonly=False) == seen  # replays in place
                assert os.fstat(fd).st_size == physical_size(len(seen))
                data = path.read_bytes()
                assert data[8] == 1 or data[58] == 0  # v1 untouched, or HAS_PENDING_WRITE clear
                assert _read_all(fd, bound, readonly=True) == seen
            finally:
                os.close(fd)
            assert not journal.exists() or journal.stat().st_size == 0
            outcomes.add(seen == new)
    assert outcomes == {False, True}  # both sides of the commit point were exercised


def test_crash_during_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An open that replays a journal can itself crash; the next open finishes the job."""
    original = (GT / "enc_v2_large.pf").read_bytes()
    new = _apply((GT / "plain_large.bin").read_bytes(), "shrink")
    path = tmp_path / "large.bin"
    journal = Path(str(path) + ".pylos-journal")
    bound = gt_path("large")
    # a flush interrupted right after its in-place writes: flag set, journal complete
    path.write_bytes(original)
    fd = open_rw(path)
    pf = ProtectedFile.open(fd, wrap_key(), bound)
    SCENARIOS["shrink"](pf)
    monkeypatch.setattr(pf_file, "os", FaultyOS(crash_at=7, mode="kill"))
    with pytest.raises(Crash):
        pf.flush()
    monkeypatch.setattr(pf_file, "os", os)
    os.close(pf._journal_fd)
    os.close(fd)
    assert path.read_bytes()[58] == 1
    pending, saved_journal = path.read_bytes(), journal.read_bytes()
    for crash_at in range(6):
        for mode in ("kill", "torn", "lose"):
            path.write_bytes(pending)
            journal.write_bytes(saved_journal)
            fd = open_rw(path)
            monkeypatch.setattr(pf_file, "os", FaultyOS(crash_at, mode, crash_at))
            try:
                ProtectedFile.open(fd, wrap_key(), bound).close()
            except Crash:
                pass
            finally:
                monkeypatch.setattr(pf_file, "os", os)
            try:
                assert _read_all(fd, bound, readonly=False) == new, (crash_at, mode)
            finally:
                os.close(fd)


def _child_loop(path: str, seed: int, ack_fd: int) -> None:
    """Write-heavy loop: random writes, appends, truncations; flush; ack the flush number."""
    rng = random.Random(seed)
    fd = open_rw(Path(path))
    pf = ProtectedFile.open(fd, wrap_key(), "victim")
    for number in range(1, 10**6):
        _ops(rng, pf)
        pf.flush()
        os.write(ack_fd, number.to_bytes(4, "little"))


def _ops(rng: random.Random, target) -> None:
    for _ in range(rng.randrange(1, 6)):
        choice = rng.random()
        size = target.size
        if choice < 0.6:
            offset = rng.randrange(size + 1)
            target.write(offset, rng.randbytes(rng.randrange(1, 30000)))
        elif choice < 0.85:
            target.write(size, rng.randbytes(rng.randrange(1, 20000)))
        elif size > 400000:
            target.truncate(rng.randrange(size))


class _Model:
    def __init__(self) -> None:
        self.data = bytearray()

    @property
    def size(self) -> int:
        return len(self.data)

    def write(self, offset: int, data: bytes) -> None:
        self.data.extend(bytes(max(0, offset - len(self.data))))
        self.data[offset:offset + len(data)] = data

    def truncate(self, size: int) -> None:
        del self.data[size:]


def test_sigkill_at_random_instants(tmp_path: Path) -> None:
    """60 SIGKILLs at random moments of a flushing loop: the file always opens, holds the state
    of the last acknowledged flush or of the one in progress, and never loses an acked one."""
    rng = random.Random(4)
    path = tmp_path / "victim"
    newer = 0
    for iteration in range(60):
        fd = open_rw(path, create=True)
        ProtectedFile.open(fd, wrap_key(), "victim", create=True).close()
        os.close(fd)
        seed = rng.randrange(10**9)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            try:
                os.close(read_end)
                _child_loop(str(path), seed, write_end)
            finally:
                os._exit(0)
        os.close(write_end)
        time.sleep(rng.uniform(0.005, 0.15))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        acks = b""
        while chunk := os.read(read_end, 65536):
            acks += chunk
        os.close(read_end)
        acked = int.from_bytes(acks[-4:], "little") if acks else 0
        # the states after each flush, replayed from the same seed
        model, states, model_rng = _Model(), [b""], random.Random(seed)
        for _ in range(acked + 1):
            _ops(model_rng, model)
            states.append(bytes(model.data))
        fd = open_rw(path)
        try:
            content = _read_all(fd, "victim", readonly=False)
        finally:
            os.close(fd)
        assert content in (states[acked], states[acked + 1]), (iteration, acked)
        newer += content == states[acked + 1] and states[acked] != states[acked + 1]
        assert walk(path.read_bytes(), wrap_key())["plain"] == content
    assert newer  # some kills landed after a commit point but before the ack


def _leave_pending(path: Path, bound: str, monkeypatch: pytest.MonkeyPatch,
                   recovery_path: str | None) -> bytes:
    """Write content, then crash a flush right after its commit point; return the content."""
    fd = open_rw(path, create=True)
    pf = ProtectedFile.open(fd, wrap_key(), bound, create=True, recovery_path=recovery_path)
    pf.write(0, b"old" * 5000)
    pf.flush()
    new = b"new" * 7000
    pf.write(0, new)
    # steps: journal truncate, write, fsync, flag write, fsync <- crash: flag set, nothing in place
    monkeypatch.setattr(pf_file, "os", FaultyOS(crash_at=4, mode="kill"))
    with pytest.raises(Crash):
        pf.flush()
    monkeypatch.setattr(pf_file, "os", os)
    os.close(pf._journal_fd)
    os.close(fd)
    assert path.read_bytes()[58] == 1
    return new


def test_recovery_file_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gramine's `<file>.gramine.recovery` (enable_recovery) and pylos' default journal are both
    found at open, by plaintext_size too; a recovery file left by an uncommitted flush (flag
    clear) is ignored and removed."""
    path = tmp_path / "f"
    for recovery in (str(path) + ".gramine.recovery", None):
        new = _leave_pending(path, "f", monkeypatch, recovery)
        journal = Path(recovery or str(path) + ".pylos-journal")
        assert journal.stat().st_size > 0
        fd = open_rw(path)
        try:
            assert pf_file.plaintext_size(fd, wrap_key(), "f") == len(new)
            assert _read_all(fd, "f", readonly=True) == new
            assert journal.exists()  # a read-only open replays in memory only
            assert _read_all(fd, "f", readonly=False) == new  # recovery_path found by name
            assert not journal.exists()
        finally:
            os.close(fd)
    # stale: a complete journal whose flush never reached its commit point
    new = _leave_pending(path, "f", monkeypatch, None)
    stale = Path(str(path) + ".pylos-journal")
    data = bytearray(path.read_bytes())
    data[58] = 0  # as if the crash came before the flag was set
    fd = open_rw(path)
    try:
        os.pwrite(fd, bytes(data[:4096]), 0)
        old = _read_all(fd, "f", readonly=False)
        assert old != new and not stale.exists()
    finally:
        os.close(fd)


def test_create_over_existing_content_is_crash_safe(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "g"
    path.write_bytes(b"not a protected file" * 1000)
    fd = open_rw(path)
    monkeypatch.setattr(pf_file, "os", FaultyOS(crash_at=4, mode="torn"))
    with pytest.raises(Crash):
        ProtectedFile.open(fd, wrap_key(), "g", create=True)
    monkeypatch.setattr(pf_file, "os", os)
    try:
        assert path.read_bytes()[8:9] == b"\x02" and path.read_bytes()[58] == 1
        assert _read_all(fd, "g", readonly=False) == b""  # replayed: the new, empty file
        assert path.stat().st_size == 4096
    finally:
        os.close(fd)
