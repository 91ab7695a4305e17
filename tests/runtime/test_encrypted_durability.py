"""Crash safety of encrypted mounts: SIGKILL of the program, and separately of the supervisor
(`pylos run` itself), at random instants of a write-heavy loop. Afterwards every file opens
(replaying its journal if a flush was cut) and holds a consistent state; what was fsync'd is
never lost. Then the same for sqlite transactions (integrity check, invariant across tables).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_encrypted import KEY, encrypted  # noqa: F401 (the fixture)

from support import EXAMPLES, PYLOS, read_protected

RECORD = 16
ITERATIONS = 50


def descendant_named(root: int, name: str) -> int | None:
    """The host PID of a process called `name` below `root` (the program in the enclave)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
        names[int(entry)] = comm
    for pid, comm in names.items():
        ancestor = parents.get(pid)
        while ancestor:
            if ancestor == root:
                if comm == name:
                    return pid
                break
            ancestor = parents.get(ancestor)
    return None


def last_synced(stdout: bytes) -> int:
    lines = [line for line in stdout.decode().splitlines() if line.startswith("synced ")]
    return int(lines[-1].split()[1]) if lines else 0


def killed_supervisor_env(directory: Path) -> dict[str, str]:
    """A supervisor killed with SIGKILL cannot remove its empty view mount point
    ($TMPDIR/pylos-root-*): let it be made in the test's own directory."""
    return {**os.environ, "TMPDIR": str(directory)}


def check_loop_files(enc: Path, synced: int, program_killed: bool) -> int:
    names = set(os.listdir(enc))
    assert not {n for n in names if n.startswith(".pylos-new-")} - names  # never visible
    if "log" not in names:
        assert synced == 0
        return 0
    log = read_protected(enc / "log", "enc/log", KEY)
    assert len(log) % RECORD == 0, "torn record"
    count = len(log) // RECORD
    expected = b"".join(b"rec %011d\n" % i for i in range(count))
    assert log == expected, "log is not a prefix of the records"
    assert count >= synced, f"fsync'd records lost: {count} < {synced}"
    if "state" in names:
        state = read_protected(enc / "state", "enc/state", KEY)
        assert len(state) in (0, 4096, 8192)
        for page in range(0, len(state), 4096):
            chunk = state[page:page + 4096]
            assert chunk == chunk[:RECORD] * 256, "torn state page"
            value = int(chunk[4:15])
            assert value >= synced - 1, "fdatasync'd state lost"
            if program_killed:  # everything written was flushed at exit
                assert value <= count - 1
    return count


@pytest.mark.parametrize("victim", ["program", "supervisor"])
def test_sigkill_during_write_loop(encrypted, victim):  # noqa: F811 (the fixture)
    enclave = encrypted()
    enc = enclave.root / "enc"
    rng = random.Random(f"{victim}-durability")
    replays = mid_loop = 0
    for iteration in range(ITERATIONS):
        if iteration % 10 == 0:  # keep files small: verification reads them whole
            shutil.rmtree(enc)
            enc.mkdir()
        process = subprocess.Popen([PYLOS, "run", "app", "loop", "/enc"], cwd=enclave.root,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=killed_supervisor_env(enclave.root.parent))
        try:
            # Even rounds: any instant from the very start (view, mounts, first opens); odd
            # rounds: once the loop runs, amid appends, rewrites and flushes.
            first = process.stdout.readline() if iteration % 2 else b""  # type: ignore[union-attr]
            if victim == "program":
                deadline = time.monotonic() + 20
                pid = None
                while pid is None and time.monotonic() < deadline:
                    pid = descendant_named(process.pid, "app")
                assert pid is not None, "the program did not start"
                time.sleep(rng.uniform(0, 0.3))
                os.kill(pid, signal.SIGKILL)
            else:
                time.sleep(rng.uniform(0.0, 0.4))
                process.kill()
            stdout, stderr = process.communicate(timeout=60)
            stdout = first + stdout
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if victim == "program":
            assert process.returncode == 128 + signal.SIGKILL, stderr.decode()
        if any(name.endswith(".pylos-journal") and (enc / name).stat().st_size
               for name in os.listdir(enc)):
            replays += 1
        synced = last_synced(stdout)
        mid_loop += synced > 0
        check_loop_files(enc, synced, victim == "program")
    assert mid_loop >= ITERATIONS // 2, "half the kills must land in the loop"
    # The next run opens every file (replaying journals) and continues where it stopped.
    result = enclave.run("stat", "/enc/log")
    assert result.returncode == 0, result.stderr
    if victim == "program":
        assert replays == 0  # the supervisor flushed everything when the program died


SQL_SETUP = ("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, pad BLOB);\n"
             "CREATE TABLE IF NOT EXISTS c (n INTEGER);\n"
             "INSERT INTO c SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM c);\n")
SQL_TRANSACTION = ("BEGIN; INSERT INTO t (pad) VALUES (randomblob(700)); "
                   "UPDATE c SET n = n + 1; COMMIT;\n")


def _feed(process: subprocess.Popen, script: bytes) -> None:
    try:
        process.stdin.write(script)  # type: ignore[union-attr]
        process.stdin.close()  # type: ignore[union-attr]
    except (BrokenPipeError, ValueError):
        pass  # killed meanwhile


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="Debian's sqlite3 is needed")
def test_sigkill_during_sqlite_transactions(tmp_path: Path):
    root = tmp_path / "sqlite"
    (root / "db").mkdir(parents=True)
    (root / "manifest.template").write_text(
        (EXAMPLES / "sqlite" / "manifest.template").read_text())
    rendered = subprocess.run([PYLOS, "manifest", "-Dlog_level=error", "-Dexecdir=/usr/bin",
                               "-Darch_libdir=/lib/x86_64-linux-gnu", "manifest.template",
                               "sqlite3.manifest"], cwd=root, capture_output=True, text=True,
                              timeout=300)
    assert rendered.returncode == 0, rendered.stderr
    key = bytes.fromhex("ffeeddccbbaa99887766554433221100")
    script = (SQL_SETUP + SQL_TRANSACTION * 5000).encode()
    rng = random.Random("sqlite-durability")
    committed = []
    for iteration in range(12):
        process = subprocess.Popen([PYLOS, "run", "./sqlite3", "/db/test.db"], cwd=root,
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=killed_supervisor_env(tmp_path))
        feeder = threading.Thread(target=_feed, args=(process, script))
        feeder.start()
        try:
            time.sleep(rng.uniform(0.3, 1.5))
            pid = descendant_named(process.pid, "sqlite3") if iteration % 2 == 0 else None
            if pid is not None:
                os.kill(pid, signal.SIGKILL)  # the program
            else:
                process.kill()  # the supervisor
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            feeder.join()
        # Decrypt the database and its hot journal (if any), as the host would, and let
        # sqlite roll the journal back: the result must be a consistent database.
        plain = tmp_path / f"plain{iteration}"
        plain.mkdir()
        for name in os.listdir(root / "db"):
            if name.endswith(".pylos-journal"):
                continue
            (plain / name).write_bytes(read_protected(root / "db" / name, f"db/{name}", key))
        if not (plain / "test.db").exists() or not (plain / "test.db").stat().st_size:
            continue
        with sqlite3.connect(plain / "test.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if {"t", "c"} <= tables:
                rows = db.execute("SELECT COUNT(*) FROM t").fetchone()[0]
                counted = db.execute("SELECT COALESCE(MAX(n), 0) FROM c").fetchone()[0]
                assert rows == counted, f"transactions torn: {rows} rows, counter {counted}"
                committed.append(rows)
    assert committed and committed[-1] > 0, "no transaction committed before the kills"
