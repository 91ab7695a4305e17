"""The `pylos` click application: a thin layer over the library API.

Every `PylosError` becomes one `ERROR: <message>` line on stderr (indented details may follow)
and its exit status: 1 for rejected input (`InputError`: a file's content is malformed or fails
a check, rejected evidence), 2 for usage errors (click's own usage errors also exit 2); a
traceback means a pylos bug, never a user mistake.
"""

from __future__ import annotations

import sys
import warnings

import click

from pylos import __version__
from pylos.errors import PylosError

# Evidence comes from whoever sends it: cryptography's warnings about the malformed but
# tolerated parts of a certificate (a name attribute of the wrong length, a negative serial
# number) would print source lines amid the verdict, which already says what matters.
warnings.filterwarnings("ignore", module=r"pylos\.attest\.")


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
        mrenclave_cmds,
        oci_cmds,
        pf_cmds,
        python_cmds,
        run_cmds,
        sign_cmds,
        trace_cmds,
        workspace_cmds,
    )

    for module in (manifest_cmds, sign_cmds, mrenclave_cmds, run_cmds, pf_cmds, workspace_cmds,
                   attest_cmds, oci_cmds, trace_cmds, python_cmds):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()

