"""`pylos trace -- CMD [ARGS]`: run a program natively once, write a manifest template for it."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import click

from pylos.errors import PylosError


def _check_writable(output: Path) -> None:
    """Fail before the run, not after it, when the template cannot be written."""
    if output.is_dir():
        raise PylosError(f"cannot write the template '{output}': it is a directory")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise PylosError(f"cannot write the template '{output}': directory '{parent}' does not "
                         "exist")
    try:  # a real file, as the template will be: access(2) says yes to root everywhere
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{output.name}."):
            pass
    except OSError as exc:
        raise PylosError(f"cannot write the template '{output}': cannot create a file in "
                         f"'{parent}' ({exc.strerror})") from None


@click.command("trace", short_help="Run CMD natively once and write a manifest template for it.",
               context_settings={"ignore_unknown_options": False,
                                 "allow_interspersed_args": False})
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="FILE",
              help="The template to write (default: NAME.manifest.template, NAME being the "
                   "command's file name).")
@click.option("--append", is_flag=True,
              help="Merge this run into FILE, a template `pylos trace` wrote (its runs are "
                   "stored at its end), and rewrite it.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
def trace_cmd(output: Path | None, append: bool, command: tuple[str, ...]) -> None:
    """Run CMD [ARGS] natively, observing it and every process it starts, and write a
    Gramine-syntax manifest template: entrypoint, arguments, mounts, trusted and allowed
    files, thread and memory limits, with comments saying what was observed.

    Exit status: the program's (the template is written whatever it is), or 1/2 for an
    error before the program runs (no command, command not found, unwritable output, --append
    to a file that is not a trace template)."""
    from pylos.hashing import write_atomic
    from pylos.trace import decode_runs, find_command, observe, render_template

    if not command:
        raise click.UsageError("no command given: pylos trace [-o FILE] [--append] -- CMD "
                               "[ARGS]...")
    executable = find_command(command[0])
    if output is None:
        output = Path(f"{os.path.basename(command[0])}.manifest.template")
    runs = []
    if append:
        try:
            text = output.read_text()
        except FileNotFoundError:
            raise PylosError(f"--append: '{output}' does not exist (trace without --append "
                             "first)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PylosError(f"--append: cannot read '{output}': {exc}") from None
        runs = decode_runs(text, str(output))
        if runs and runs[0].entrypoint != executable:
            raise PylosError(f"--append: '{output}' is a template for {runs[0].entrypoint}, "
                             f"not {executable} (a manifest has one libos.entrypoint; trace "
                             "it into a template of its own)")
    _check_writable(output)
    started = time.monotonic()
    run = observe(list(command))
    elapsed = time.monotonic() - started
    runs.append(run)
    template = render_template(runs)  # before writing: a refused merge leaves the file as is
    try:
        write_atomic(output, template.encode())
    except OSError as exc:
        raise PylosError(f"cannot write the template '{output}': {exc.strerror}") from None
    what = f"{len(runs)} runs" if len(runs) > 1 else "the run"
    click.echo(f"pylos trace: wrote {output} from {what} ({elapsed:.2f} s traced, "
               f"{len(run.paths)} paths, {run.processes} process"
               f"{'es' if run.processes != 1 else ''}); the program exited with status "
               f"{run.exit_status}", err=True)
    sys.exit(run.exit_status)


COMMANDS = [trace_cmd]
