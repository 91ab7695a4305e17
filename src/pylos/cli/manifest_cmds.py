"""`pylos manifest` (gramine-manifest) and `pylos manifest-check` (gramine-manifest-check)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pylos.cli.progress import hashing_progress
from pylos.errors import InputError, PylosError
from pylos.hashing import HashCache, write_atomic
from pylos.manifest import Manifest, parse_defines
from pylos.manifest.trusted import MissingTrustedFile


@click.command("manifest")
@click.option("-D", "--define", "defines", multiple=True, metavar="KEY[=VALUE]",
              help="Define a template variable (a string, or True without '=').")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Validate the rendered manifest against the schema.")
@click.option("--chroot", type=click.Path(file_okay=False, path_type=Path),
              help="Measure trusted files inside this directory (absolute URIs only).")
@click.option("-c", "--string", "template_string", metavar="TEMPLATE",
              help="The template text itself instead of a file.")
@click.argument("infile", required=False, metavar="[TEMPLATE]")
@click.argument("outfile", required=False, default="-", metavar="[OUTPUT]")
def manifest_cmd(defines: tuple[str, ...], check: bool, chroot: Path | None,
                 template_string: str | None, infile: str | None, outfile: str) -> None:
    """Render a manifest template, fill defaults, validate and hash trusted files.

    Exit status: 0 written, 1 the template or the manifest it renders is rejected (one ERROR:
    line, with the problems indented below), 2 usage error (a -D missing, unreadable file)."""
    if template_string is not None and infile is not None:
        # With -c the single positional argument is the output file.
        if outfile != "-":
            raise click.UsageError("give either -c TEMPLATE or a template file, not both")
        infile, outfile = None, infile
    if template_string is None and infile is None:
        raise click.UsageError("give a template file or -c TEMPLATE")
    if template_string is not None:
        text, source, search_dir = template_string, "<string>", Path.cwd()
    elif infile == "-":
        text, source, search_dir = sys.stdin.read(), "<stdin>", Path.cwd()
    else:
        try:
            text = Path(infile).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise PylosError(f"cannot read template '{infile}': {exc}") from None
        source, search_dir = infile, Path(infile).resolve().parent

    manifest = Manifest.from_template(text, parse_defines(defines), source, search_dir)
    if check:
        manifest.check()
    try:
        manifest.expand_all_trusted_files(chroot, HashCache.default(), hashing_progress)
    except MissingTrustedFile as exc:
        line = template_line(text, exc.uri)
        raise InputError(f"{source}:{line}: {exc}" if line else f"{source}: {exc}") from None
    output = manifest.dumps()
    if outfile == "-":
        sys.stdout.write(output)
    else:
        try:
            write_atomic(Path(outfile), output.encode())
        except OSError as exc:
            raise PylosError(f"cannot write manifest '{outfile}': {exc}") from None


def template_line(text: str, uri: str) -> int | None:
    """The template line that most likely wrote `uri` (rendered values differ from the
    template's text: the URI itself, else its last path component, quoted)."""
    name = uri.rstrip("/").rsplit("/", 1)[-1].removeprefix("file:")
    for needle in (f'"{uri}"', f"'{uri}'", uri, name):
        for number, line in enumerate(text.splitlines(), 1):
            if needle and needle in line:
                return number
    return None


@click.command("manifest-check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def manifest_check_cmd(file: Path) -> None:
    """Validate a rendered manifest; silent with exit status 0 when it is valid.

    Exit status: 0 valid, 1 invalid (one ERROR: line naming the file, every schema problem
    indented below), 2 usage error (unreadable file)."""
    Manifest.load(file).check()


COMMANDS = [manifest_cmd, manifest_check_cmd]
