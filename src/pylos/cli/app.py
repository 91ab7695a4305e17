"""The `pylos` click application: a thin layer over the library API.

Every `PylosError` becomes `ERROR: <message>` on stderr and exit status 2 (click's own usage
errors also exit 2); a traceback means a pylos bug, never a user mistake.
"""

from __future__ import annotations

import sys

import click

from pylos import __version__
from pylos.errors import PylosError


class PylosGroup(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except PylosError as exc:
            click.echo(f"ERROR: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=PylosGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pylos")
def cli() -> None:
    """pylos: run unmodified Linux programs in a (simulated) SGX enclave, Gramine-style."""


def _register() -> None:
    from pylos.cli import (
        attest_cmds,
        manifest_cmds,
        pf_cmds,
        run_cmds,
        sign_cmds,
        workspace_cmds,
    )

    for module in (manifest_cmds, sign_cmds, run_cmds, pf_cmds, workspace_cmds, attest_cmds):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()

