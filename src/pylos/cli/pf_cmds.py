"""`pylos pf gen-key|encrypt|decrypt`: Gramine's `gramine-sgx-pf-crypt` (protected files)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from pylos.cli.progress import size_text
from pylos.pf import convert

SHOW_PROGRESS_FROM = 32 << 20  # bytes: smaller inputs finish before a bar is worth drawing


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr for large inputs on a terminal, else no callback."""
    if total < SHOW_PROGRESS_FROM or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda nbytes: bar.advance(task, nbytes)  # rich redraws from its own thread


_wrap_key = click.option("-w", "--wrap-key", "wrap_key", required=True, metavar="PATH",
                         type=click.Path(dir_okay=False, path_type=Path),
                         help="Wrap key file: 16 raw bytes.")
_input = click.option("-i", "--input", "source", required=True, metavar="PATH",
                      help="Single file or directory with input files to convert.")
_output = click.option("-o", "--output", "target", required=True, metavar="PATH",
                       help="Single file or directory to write output files to.")
_verbose = click.option("-v", "--verbose", is_flag=True, help="Print every file converted.")


@click.group("pf")
def pf_group() -> None:
    """Gramine protected (encrypted) files, like gramine-sgx-pf-crypt."""


@pf_group.command("gen-key")
@_wrap_key
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing key file.")
def gen_key_cmd(wrap_key: Path, force: bool) -> None:
    """Generate a random 16-byte wrap key (mode 0600)."""
    convert.generate_key(wrap_key, force)
    click.echo(f"Wrap key saved to: {wrap_key}", err=True)


@pf_group.command("encrypt")
@_wrap_key
@_input
@_output
@_verbose
def encrypt_cmd(wrap_key: Path, source: str, target: str, verbose: bool) -> None:
    """Encrypt plaintext files.

    Each encrypted file embeds its output path exactly as given with -o (normalized), so the
    manifest's encrypted mount must yield that same host path.
    """
    key = convert.load_key(wrap_key)
    jobs = convert.plan(source, target)
    with _progress(sum(j.size for j in jobs), "encrypting") as progress:
        bound = convert.encrypt_files(jobs, key, progress)
    total = sum(job.size for job, _ in bound)
    if verbose:
        for job, path in bound:
            click.echo(f"Encrypted: {job.source} -> {job.target} (bound path '{path}')", err=True)
    example = f"; bound path e.g. '{bound[0][1]}'" if bound else ""
    click.echo(f"Encrypted {len(bound)} file(s), {size_text(total)}{example}", err=True)


@pf_group.command("decrypt")
@_wrap_key
@_input
@_output
@click.option("-V", "--verify", is_flag=True,
              help="Check that each file is bound to its (normalized) input path.")
@_verbose
def decrypt_cmd(wrap_key: Path, source: str, target: str, verify: bool, verbose: bool) -> None:
    """Decrypt encrypted files (every node's MAC is checked; nothing is written on error).

    Exit status: 0 decrypted, 1 an input is rejected (not a protected file, a MAC mismatch —
    the wrong key or a modified file —, a wrong size or bound path; one ERROR: line names the
    file), 2 usage error (the wrap key file, unreadable input, unwritable output)."""
    key = convert.load_key(wrap_key)
    jobs = convert.plan(source, target)
    with _progress(sum(j.size for j in jobs), "decrypting") as progress:
        convert.decrypt_files(jobs, key, verify, progress)
    if verbose:
        for job in jobs:
            click.echo(f"Decrypted: {job.source} -> {job.target}", err=True)
    checked = ", bound paths verified" if verify else ""
    click.echo(f"Decrypted {len(jobs)} file(s){checked}", err=True)


COMMANDS = [pf_group]
