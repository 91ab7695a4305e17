"""`pylos python init`: a manifest template for a Python app in a virtual environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pylos.errors import PylosError


@click.group("python")
def python_group() -> None:
    """Python apps: manifests that trust exactly what the app loads."""


@python_group.command("init")
@click.argument("app", metavar="APP.py")
@click.argument("args", nargs=-1, metavar="[-- ARGS]...")
@click.option("--venv", "venv_path", metavar="PATH",
              help="The app's virtual environment [default: $VIRTUAL_ENV].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Template to write [default: APP.manifest.template here].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120.0,
              show_default=True, help="Seconds the native run may take.")
def init_cmd(app: str, args: tuple[str, ...], venv_path: str | None, output: Path | None,
             timeout: float) -> None:
    """Run APP.py natively once with the venv's interpreter (ARGS after `--` are its
    arguments, also in the manifest's loader.argv), and write a manifest template trusting
    exactly what it loaded: the interpreter, the shared libraries, the standard-library
    modules and the distributions' files it imported, their precompiled .pyc.

    Exit status: 0 written, 1 the app or the venv is rejected (a syntax error, a failing
    native run, not a venv), 2 usage error (no such file, no venv given)."""
    from pylos.pyapp import Venv, init_app

    if venv_path is None:
        venv_path = os.environ.get("VIRTUAL_ENV")
        if not venv_path:
            raise PylosError("no virtual environment: give --venv PATH (or activate the "
                             "app's venv)")
    venv = Venv.find(venv_path)
    if output is None:
        output = Path(Path(app).name.removesuffix(".py") + ".manifest.template")
    command = ["pylos", "python", "init", app, "--venv", venv_path]
    if output != Path(Path(app).name.removesuffix(".py") + ".manifest.template"):
        command += ["-o", str(output)]
    if args:
        command += ["--", *args]
    plan = init_app(app, venv, output, args, command, timeout)
    counts = ", ".join(f"{group.label}: {len(group.paths)}" for group in plan.groups)
    base = str(output).removesuffix(".manifest.template")
    click.echo(f"Traced {app} natively with {venv.python}: {len(plan.trace.modules)} modules "
               "with files imported", err=True)
    click.echo(f"Wrote {output}: {plan.trusted_count} trusted files (glibc: {len(plan.glibc)}, "
               f"{counts}), {len(plan.mounts)} mounts", err=True)
    if plan.uncompiled:
        click.echo(f"note: {len(plan.uncompiled)} modules have no usable .pyc and are compiled "
                   "at every start (listed in the template)", err=True)
    click.echo(f"Next: pylos manifest {output} {base}.manifest && pylos sign -m "
               f"{base}.manifest && pylos run {base}", err=True)
    sys.stderr.flush()


COMMANDS = [python_group]
