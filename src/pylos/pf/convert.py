"""Encrypt or decrypt files and whole trees, all or nothing (`gramine-sgx-pf-crypt` semantics).

A directory input maps `IN/rel` to `OUT/rel` (`OUT` is created). The path bound into an
encrypted file is its output path string as given, normalized as Gramine does (`a//b/./c` ->
`a/b/c`; relative stays relative), so it matches what the manifest's mount `uri` yields.
Decryption checks the bound path only with `verify` (then it must equal the normalized input
path), as Gramine's tool does.

Every output is written to a temporary file next to its destination and fsynced; only when all
inputs converted do the temporaries replace their destinations. Any error removes every
temporary and every directory this run created, so a failed run leaves no output at all.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pylos.errors import PylosError
from pylos.hashing import write_atomic
from pylos.pf.format import KEY_SIZE, PfError, encode_path, normalize_path
from pylos.pf.stream import decrypt_stream, encrypt_stream

Progress = Callable[[int], None]
OUTPUT_MODE = 0o664  # Gramine's PERM_rw_rw_r__, less the umask


@dataclass(frozen=True)
class Job:
    source: str  # input path as the user spelled it (plus the relative part)
    target: str  # output path likewise
    size: int


def generate_key(path: Path, force: bool = False) -> None:
    """Write 16 random bytes (a wrap key, as `gramine-sgx-pf-crypt gen-key`) with mode 0600."""
    if path.exists() and not force:
        raise PylosError(f"wrap key '{path}' already exists; use --force to overwrite it")
    if not path.parent.is_dir():
        raise PylosError(f"cannot write wrap key '{path}': directory '{path.parent}' does not "
                         "exist")
    write_atomic(path, os.urandom(KEY_SIZE), mode=0o600)


def load_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise PylosError(f"cannot read wrap key '{path}': {exc.strerror}") from None
    if len(key) != KEY_SIZE:
        raise PylosError(f"wrap key '{path}' is {len(key)} bytes; a wrap key is {KEY_SIZE} raw "
                         "bytes (make one with `pylos pf gen-key -w FILE`)")
    return key


def plan(source: str, target: str) -> list[Job]:
    """The files to convert: one, or every regular file under a directory (sorted)."""
    try:
        st = os.stat(source)
    except OSError as exc:
        raise PylosError(f"cannot read input '{source}': {exc.strerror}") from None
    if not os.path.isdir(source):
        if not os.path.isfile(source):
            raise PylosError(f"input '{source}' is neither a regular file nor a directory")
        return [Job(source, target, st.st_size)]
    jobs = []
    for root, dirs, files in os.walk(source, onerror=_walk_error):
        dirs.sort()
        rel = os.path.relpath(root, source)
        for name in sorted(files):
            src = os.path.join(root, name)
            if not os.path.isfile(src):  # sockets, FIFOs, dangling links: Gramine skips them
                continue
            parts = [] if rel == "." else rel.split(os.sep)
            jobs.append(Job(f"{source}/{'/'.join([*parts, name])}",
                            f"{target}/{'/'.join([*parts, name])}", os.path.getsize(src)))
    return jobs


def _walk_error(exc: OSError) -> None:
    raise PylosError(f"cannot read directory '{exc.filename}': {exc.strerror}")


class _Staging:
    """Temporary outputs and created directories, committed together or removed together."""

    def __init__(self) -> None:
        self.temps: list[tuple[str, str]] = []
        self.created_dirs: list[str] = []
        umask = os.umask(0)
        os.umask(umask)
        self.mode = OUTPUT_MODE & ~umask

    def make_parent(self, target: str) -> str:
        parent = os.path.dirname(target) or "."
        missing = []
        probe = parent
        while probe and not os.path.isdir(probe):
            missing.append(probe)
            probe = os.path.dirname(probe)
        for directory in reversed(missing):
            try:
                os.mkdir(directory, 0o775)
            except OSError as exc:
                raise PylosError(f"cannot create output directory '{directory}': "
                                 f"{exc.strerror}") from None
            self.created_dirs.append(directory)
        return parent

    def temp_for(self, target: str) -> tuple[int, str]:
        parent = self.make_parent(target)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp",
                                       dir=parent)
        except OSError as exc:
            raise PylosError(f"cannot write output '{target}': {exc.strerror}") from None
        self.temps.append((tmp, target))
        return fd, tmp

    def commit(self) -> None:
        for _, target in self.temps:
            if os.path.isdir(target):
                raise PylosError(f"output '{target}' is a directory")
        for tmp, target in self.temps:
            os.replace(tmp, target)
        for parent in {os.path.dirname(t) or "." for _, t in self.temps}:
            fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.temps = []

    def abort(self) -> None:
        for tmp, _ in self.temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        for directory in reversed(self.created_dirs):
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def _run(jobs: list[Job], convert: Callable[[Job, int], None]) -> None:
    staging = _Staging()
    try:
        for job in jobs:
            if os.path.isdir(job.target):
                raise PylosError(f"output '{job.target}' is a directory")
            fd, _ = staging.temp_for(job.target)
            try:
                os.fchmod(fd, staging.mode)
                convert(job, fd)
                os.fsync(fd)
            except OSError as exc:
                raise PylosError(f"'{job.source}' -> '{job.target}': {exc.strerror or exc}"
                                 ) from None
            finally:
                os.close(fd)
        staging.commit()
    except BaseException:
        staging.abort()
        raise


def encrypt_files(jobs: list[Job], key: bytes, progress: Progress | None = None
                  ) -> list[tuple[Job, str]]:
    """Encrypt the planned files; return each job with the path bound into its output."""
    bound: list[tuple[Job, str]] = []

    def convert(job: Job, fd: int) -> None:
        path = normalize_path(job.target)
        try:
            encode_path(path)
        except PfError as exc:  # the -o path given: a usage error, not a rejected file
            raise PylosError(f"output '{job.target}': {exc}") from None
        try:
            src = open(job.source, "rb", buffering=0)  # noqa: SIM115 - closed below
        except OSError as exc:
            raise PylosError(f"cannot read input '{job.source}': {exc.strerror}") from None
        with src:
            size = os.fstat(src.fileno()).st_size
            try:
                encrypt_stream(src, size, fd, key, path, progress)
            except PfError as exc:
                raise PfError(f"'{job.source}': {exc}", exc.check) from None
        bound.append((job, path))

    _run(jobs, convert)
    return bound


def decrypt_files(jobs: list[Job], key: bytes, verify: bool = False,
                  progress: Progress | None = None) -> None:
    """Decrypt the planned files, checking every MAC; with `verify`, also the bound paths."""

    def convert(job: Job, fd: int) -> None:
        try:
            src_fd = os.open(job.source, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise PylosError(f"cannot read input '{job.source}': {exc.strerror}") from None
        try:
            with os.fdopen(os.dup(fd), "wb") as dst:
                decrypt_stream(src_fd, dst, key, normalize_path(job.source) if verify else None,
                               f"encrypted file '{job.source}'", progress)
        finally:
            os.close(src_fd)

    _run(jobs, convert)
