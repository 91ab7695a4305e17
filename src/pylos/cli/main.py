"""Entry point of the `pylos` command.

`pylos run` is the hot path (every enclave start pays for it), so it goes straight to the
runtime without importing the CLI framework or the build-time tools; every other command
goes through the click application in `pylos.cli.app`.
"""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "run" and not sys.argv[2].startswith("-"):
        from pylos.errors import PylosError
        from pylos.runtime.launcher import run

        try:
            sys.exit(run(sys.argv[2], sys.argv[3:]))
        except PylosError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
    from pylos.cli.app import cli

    cli(prog_name="pylos")
