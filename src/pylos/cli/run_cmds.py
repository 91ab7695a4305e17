"""`pylos run` (gramine-sgx / gramine-direct)."""

from __future__ import annotations

import sys

import click


@click.command("run", context_settings={"ignore_unknown_options": True,
                                        "allow_interspersed_args": False})
@click.argument("app")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run_cmd(app: str, args: tuple[str, ...]) -> None:
    """Run APP in its enclave: APP.manifest.sgx + APP.sig, or APP.manifest (development)."""
    from pylos.runtime.launcher import run

    sys.exit(run(app, list(args)))


COMMANDS = [run_cmd]
