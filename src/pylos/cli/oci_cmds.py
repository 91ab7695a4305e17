"""`pylos oci build` and `pylos oci import`: container images (`pylos.oci`), like Gramine's GSC."""

from __future__ import annotations

from pathlib import Path

import click

# pylos.oci is imported by the commands that use it: its imports cost every other command
# ~40 ms otherwise.


@click.group("oci")
def oci_group() -> None:
    """OCI container images of pylos apps."""


@oci_group.command("build")
@click.argument("app")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Image tar to write [default: APP.oci.tar].")
@click.option("-t", "--tag", "ref", metavar="NAME:TAG",
              help="Image reference in index.json [default: localhost/pylos-APP:latest].")
@click.option("--workdir", help="Where the app (and its relative trusted files) lives in the "
              "image [default: /app].")
def build_cmd(app: str, output: Path | None, ref: str | None, workdir: str | None) -> None:
    """Write the OCI image (layout tar) of the signed app APP (APP.manifest.sgx + APP.sig):
    the host's Python, pylos and the app's trusted files; entrypoint `pylos run APP`.

    Run it with e.g. `podman run --rm --security-opt unmask=/proc/* --security-opt
    seccomp=unconfined --device /dev/fuse oci-archive:APP.oci.tar` (docs/containers.md).

    Exit status: 0 written, 1 the app is rejected (a trusted file changed since signing),
    2 usage error (no signed app, a file that cannot be read or written)."""
    from pylos.oci.build import build_image
    from pylos.runtime.load import app_base

    output = output or Path(app_base(app) + ".oci.tar")
    built = build_image(app, output, ref, workdir)
    for comment, entries, size in built.layers:
        click.echo(f"    layer: {comment} ({entries} entries, {size / 1e6:.1f} MB)")
    click.echo(f"Wrote {built.output} ({built.ref}, manifest {built.manifest_digest}, "
               f"mr_enclave {built.mr_enclave})")


@oci_group.command("import")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="The app's name: DIR/NAME.manifest.template [default: from the "
              "image's name, else 'app'].")
def import_cmd(image: Path, directory: Path, name: str | None) -> None:
    """Make the pylos workspace DIRECTORY from IMAGE (a docker-save or OCI-layout tar): the
    layers unpacked into DIRECTORY/rootfs, and a manifest template running the image's
    Entrypoint + Cmd with its Env and WorkingDir.

    Exit status: 0 imported, 1 the image is rejected (malformed, a digest that does not match,
    a layer that would write outside rootfs), 2 usage error (unreadable IMAGE, DIRECTORY not
    empty)."""
    from pylos.oci.unpack import import_image

    imported = import_image(image, directory, name)
    for note in imported.skipped:
        click.echo(f"skipped: {note}", err=True)
    template = f"{imported.app}.manifest.template"
    click.echo(f"Imported {imported.layers} layer(s) of {image} ({imported.kind}) into "
               f"{directory}/rootfs; entrypoint {imported.entrypoint}, argv {imported.argv}")
    click.echo(f"Next: cd {directory} && pylos manifest {template} {imported.app}.manifest && "
               f"pylos sign -m {imported.app}.manifest && pylos run {imported.app}")


COMMANDS = [oci_group]
