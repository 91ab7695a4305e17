"""The Occlum-style workspace commands: new, init, copy-bom, build, start, exec, stop, status,
print. `pylos run /bin/app` in a workspace is routed by `pylos.cli.main` and `run_cmds`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from pylos.errors import PylosError


def _echo(message: str) -> None:
    click.echo(message, err=True)


@click.command("new")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def new_cmd(directory: Path) -> None:
    """Create DIRECTORY as a workspace (Occlum.json, image/ with loader and libc)."""
    from pylos.workspace.workspace import new_workspace

    new_workspace(directory.absolute(), _echo)


@click.command("init")
def init_cmd() -> None:
    """Make the current directory a workspace (Occlum.json, image/ with loader and libc)."""
    from pylos.workspace.workspace import init_workspace

    init_workspace(Path.cwd(), _echo)


@click.command("copy-bom")
@click.option("-f", "--file", "bom_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The bom (YAML).")
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The image directory to fill.")
@click.option("-i", "--include-dir", "include_dirs", multiple=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Where included boms are found (the shipped templates always are).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("-v", "--verbose", is_flag=True, help="Print each operation.")
def copy_bom_cmd(bom_file: Path, root: Path, include_dirs: tuple[Path, ...], dry_run: bool,
                 verbose: bool) -> None:
    """Fill an image from an Occlum bom file, with the shared libraries of every ELF.

    Exit status: 0 done, 1 the bom is rejected (one ERROR: line names the bom and the entry;
    the image is untouched), 2 usage error (no such bom, unreadable files, unwritable image)."""
    from pylos.workspace.bom import apply_plan, plan_bom

    started = time.monotonic()
    plan = plan_bom(bom_file, root, list(include_dirs))
    for warning in plan.warnings:
        _echo(f"warning: {warning}")
    if dry_run:
        for op in plan.ops.values():
            click.echo(op.describe())
        click.echo(f"dry run: {plan.summary()}")
        return
    copied = apply_plan(plan, click.echo if verbose else None)
    _echo(f"copy-bom: {copied} files copied, {plan.summary()} "
          f"({time.monotonic() - started:.2f} s)")


@click.command("build")
@click.option("-k", "--sign-key", type=click.Path(dir_okay=False, path_type=Path),
              help="Signing key [default: ~/.config/pylos/enclave-key.pem].")
@click.option("--reset", is_flag=True, help="Empty the writable layer (run/upper) first.")
@click.option("--image-key", type=click.Path(dir_okay=False, path_type=Path),
              help="Encrypt the image with this key (`pylos gen-image-key`).")
@click.option("--sgx-mode", type=click.Choice(["SIM", "HYPER", "HW"]), default=None,
              help="Accepted for Occlum compatibility: pylos always simulates SGX.")
def build_cmd(sign_key: Path | None, reset: bool, image_key: Path | None,
              sgx_mode: str | None) -> None:
    """Build the workspace: measure image/ and sign build/enclave.manifest.sgx.

    Exit status: 0 built, 1 Occlum.json (or the manifest made from it) is rejected (one ERROR:
    line, the problems indented below), 2 usage error (no workspace, no image, the key)."""
    from pylos.cli.progress import hashing_progress
    from pylos.workspace.workspace import build_workspace, find_workspace

    if sgx_mode not in (None, "SIM"):
        _echo(f"note: --sgx-mode {sgx_mode}: pylos has no SGX hardware mode; building a "
              "simulated enclave")
    started = time.monotonic()
    result = build_workspace(find_workspace(), sign_key, reset, _echo, hashing_progress,
                             image_key)
    click.echo(f"Built simulated SGX enclave: {result.trusted} trusted files, enclave size "
               f"{result.enclave_size >> 20} MiB ({time.monotonic() - started:.2f} s)")
    click.echo(f"mr_enclave: {result.mr_enclave}")
    click.echo(f"mr_signer:  {result.mr_signer}")


@click.command("gen-image-key")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def gen_image_key_cmd(file: Path) -> None:
    """Write a random 128-bit image key (Occlum's format: 16 hex bytes joined by '-')."""
    from pylos.workspace.image import gen_image_key

    gen_image_key(file)


@click.command("start")
def start_cmd() -> None:
    """Boot the enclave once and serve `pylos exec` requests."""
    from pylos.workspace.launch import start_server
    from pylos.workspace.workspace import find_workspace

    started = time.monotonic()
    pid = start_server(find_workspace())
    _echo(f"pylos exec server started in the simulated enclave (pid {pid}, "
          f"{time.monotonic() - started:.2f} s)")


@click.command("exec", context_settings={"ignore_unknown_options": True,
                                         "allow_interspersed_args": False})
@click.argument("path")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def exec_cmd(path: str, args: tuple[str, ...]) -> None:
    """Run PATH in the started enclave, on this terminal; exit with its status."""
    from pylos.workspace.launch import exec_in_server
    from pylos.workspace.workspace import find_workspace

    sys.exit(exec_in_server(find_workspace(), path, list(args)))


@click.command("stop")
def stop_cmd() -> None:
    """End the started enclave (SIGTERM to its programs, 30 s grace, then kill)."""
    from pylos.workspace.launch import stop_server
    from pylos.workspace.workspace import find_workspace

    if not stop_server(find_workspace()):
        _echo("no server was running")


@click.command("status")
def status_cmd() -> None:
    """Print the workspace state: initialized, built or running."""
    from pylos.workspace.launch import server_pid
    from pylos.workspace.workspace import ENCLAVE, find_workspace

    ws = find_workspace()
    pid = server_pid(ws)
    if pid is not None:
        click.echo(f"running (server pid {pid})")
    elif (ws / f"{ENCLAVE}.sig").exists():
        click.echo("built")
    else:
        click.echo("initialized")


@click.command("print")
@click.argument("what", type=click.Choice(["mrenclave", "mrsigner"]))
def print_cmd(what: str) -> None:
    """Print the built enclave's MRENCLAVE or MRSIGNER."""
    from pylos.sgx.sigstruct import Sigstruct
    from pylos.workspace.workspace import ENCLAVE, find_workspace

    path = find_workspace() / f"{ENCLAVE}.sig"
    try:
        sigstruct = Sigstruct.unpack(path.read_bytes())
    except OSError as exc:
        raise PylosError(f"cannot read '{path}' ({exc.strerror}): run `pylos build` first"
                         ) from None
    except ValueError as exc:
        raise PylosError(f"'{path}': {exc}") from None
    value = sigstruct.enclave_hash if what == "mrenclave" else sigstruct.mr_signer()
    click.echo(value.hex())


COMMANDS = [new_cmd, init_cmd, copy_bom_cmd, build_cmd, gen_image_key_cmd, start_cmd,
            exec_cmd, stop_cmd, status_cmd, print_cmd]
