"""`pylos run` (gramine-sgx / gramine-direct), `pylos doctor`, `pylos argv-serializer`."""

from __future__ import annotations

import os
import sys

import click


@click.command("run", short_help="Run APP in its enclave (signed, or unsigned for development).",
               context_settings={"ignore_unknown_options": True,
                                        "allow_interspersed_args": False,
                                        "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run_cmd(args: tuple[str, ...]) -> None:
    """Run APP in its enclave: APP.manifest.sgx + APP.sig, or APP.manifest unsigned.

    pylos run [--sgx | --direct] [--log-level LEVEL] [--trace[=FILE]] APP [ARGS]...
    (`pylos run --help` says more). `pylos run` is normally served before this command is
    reached (cli/main.py); this is the same command for callers of the click application.
    """
    from pylos.cli.run_args import USAGE, parse_run_args
    from pylos.runtime.launcher import run

    options, app, program_args = parse_run_args(list(args))
    if app is None:
        click.echo(USAGE, nl=False)
        return
    if os.path.isfile("Occlum.json"):
        from pylos.workspace.launch import run_in_workspace

        sys.exit(run_in_workspace(app, program_args, options=options))
    sys.exit(run(app, program_args, options=options))


@click.command("doctor")
def doctor_cmd() -> None:
    """Check what this machine gives pylos; exit status = bitmask of what is missing.

    Each line is OK or FIX, with the fix. Bits: 1 seccomp notification, 2 ADDFD, 8 openat2,
    16 memfd, 32 kernel version, 64 Python version (required); 4 user namespaces (without
    them: identity mounts), 128 /dev/fuse (encrypted mounts, /dev/attestation), 256 Landlock
    ABI 6 (the second wall).
    """
    from pylos.runtime.doctor import check, notes

    status = required_missing = 0
    for feature, ok in check():
        click.echo(f"{'OK ' if ok else 'FIX'}  {feature.label}")
        if not ok:
            click.echo(f"     fix: {feature.fix_text}")
            status |= feature.bit
            required_missing += feature.required
    for note in notes():
        click.echo(f"     {note}")
    if required_missing:
        click.echo(f"pylos cannot run enclaves here (exit status {status} = missing bits)")
    elif status:
        click.echo(f"pylos can run enclaves here, without what FIX lines name (exit status "
                   f"{status} = missing bits)")
    else:
        click.echo("pylos can run enclaves on this machine (simulated SGX: no hardware used)")
    sys.exit(status)


@click.command("argv-serializer")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def argv_serializer_cmd(args: tuple[str, ...]) -> None:
    """Write ARGS NUL-separated to stdout, for loader.argv_src_file (gramine-argv-serializer)."""
    sys.stdout.buffer.write(b"".join(arg.encode() + b"\0" for arg in args))


COMMANDS = [run_cmd, doctor_cmd, argv_serializer_cmd]
