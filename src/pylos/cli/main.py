"""Entry point of the `pylos` command.

`pylos run` is the hot path (every enclave start pays for it), so it goes straight to the
runtime without importing the CLI framework or the build-time tools; every other command
goes through the click application in `pylos.cli.app`.
"""

from __future__ import annotations

import contextlib
import os
import sys

from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import NoReturn


def exit_now(status: int) -> NoReturn:
    """End the process once a run is over, without the interpreter's teardown: collecting
    and freeing every module's objects took ~12 ms of each `pylos run` here, and nothing of
    pylos's is left to do then but flush standard output and error."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken: nobody to tell
            stream.flush()
    os._exit(status)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        from pylos.cli.run_args import USAGE, parse_run_args
        from pylos.errors import PylosError

        try:
            options, app, args = parse_run_args(sys.argv[2:])
            if app is None:
                print(USAGE, end="")
                sys.exit(0)
            from pylos.runtime.launcher import run

            if os.path.isfile("Occlum.json"):  # in a workspace: APP is a path in the image
                from pylos.workspace.launch import run_in_workspace

                exit_now(run_in_workspace(app, args, options=options))
            exit_now(run(app, args, options=options))
        except PylosError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            exit_now(exc.exit_code)
    if (len(sys.argv) > 2 and sys.argv[1] == "exec" and not sys.argv[2].startswith("-")
            and os.path.isfile("Occlum.json")):
        # `pylos exec` in a workspace is the server mode's hot path: no CLI framework either.
        from pathlib import Path

        from pylos.errors import PylosError
        from pylos.workspace.launch import exec_in_server

        try:
            exit_now(exec_in_server(Path.cwd(), sys.argv[2], sys.argv[3:]))
        except PylosError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            exit_now(exc.exit_code)
    from pylos.cli.app import cli

    cli(prog_name="pylos")
