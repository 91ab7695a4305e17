"""`pylos gen-key`, `pylos sign` and `pylos sigstruct-view` (Gramine's sgx-gen-private-key,
sgx-sign and sgx-sigstruct-view)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pylos.cli.progress import hashing_progress
from pylos.errors import PylosError, about
from pylos.hashing import HashCache, write_atomic
from pylos.manifest import Manifest
from pylos.sgx import keys
from pylos.sgx.layout import describe_layout
from pylos.sgx.sign import libos_hash_of, parse_date, sign_manifest
from pylos.sgx.sigstruct import Sigstruct


@click.command("gen-key")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing key.")
def gen_key_cmd(file: Path | None, force: bool) -> None:
    """Generate an RSA-3072 (e = 3) signing key [default: ~/.config/pylos/enclave-key.pem]."""
    path = file or keys.default_key_path()
    if path.exists() and not force:  # before the slow key generation
        raise PylosError(f"signing key '{path}' already exists; use --force to overwrite it")
    keys.write_signing_key(path, keys.generate_signing_key(), force=force)
    click.echo(f"Wrote enclave signing key to {path}", err=True)


def _default_sigfile(manifest: Path) -> Path:
    name = manifest.name.removesuffix(".manifest")
    return manifest.with_name(name + ".sig")


@click.command("sign")
@click.option("-m", "--manifest", "manifest_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The rendered APP.manifest.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Signed manifest to write [default: MANIFEST.sgx].")
@click.option("-k", "--key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Signing key [default: ~/.config/pylos/enclave-key.pem].")
@click.option("-s", "--sigfile", type=click.Path(dir_okay=False, path_type=Path),
              help="SIGSTRUCT to write [default: APP.sig].")
@click.option("--date", "date_text", metavar="YYYY-MM-DD|today|0000-00-00",
              help="SIGSTRUCT date [default: today, or SOURCE_DATE_EPOCH].")
@click.option("--chroot", type=click.Path(file_okay=False, path_type=Path),
              help="Measure trusted files inside this directory.")
@click.option("--depfile", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a Makefile dependency file listing every trusted file.")
@click.option("--libpal", hidden=True, help="Accepted for Gramine compatibility; ignored.")
@click.option("-v", "--verbose", is_flag=True, help="Also print the enclave memory layout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def sign_cmd(manifest_path: Path, output: Path | None, key_path: Path | None,
             sigfile: Path | None, date_text: str | None, chroot: Path | None,
             depfile: Path | None, libpal: str | None, verbose: bool, quiet: bool) -> None:
    """Sign APP.manifest: write APP.manifest.sgx and the SIGSTRUCT APP.sig.

    Exit status: 0 signed, 1 the manifest is rejected, 2 usage error (the key, an option, an
    unreadable file)."""
    if libpal is not None and not quiet:
        click.echo("pylos sign: --libpal ignored (pylos has no PAL binary; the LibOS hash is "
                   "loader.entrypoint.sha256)", err=True)
    output = output or manifest_path.with_name(manifest_path.name + ".sgx")
    sigfile = sigfile or _default_sigfile(manifest_path)
    date = parse_date(date_text)
    key = keys.load_signing_key(key_path or keys.default_key_path())
    manifest = Manifest.load(manifest_path)
    signed = sign_manifest(manifest, key, date, chroot, HashCache.default(), hashing_progress)
    try:
        write_atomic(output, signed.manifest_sgx)
        write_atomic(sigfile, signed.sigstruct.pack())
        if depfile is not None:
            deps = " ".join(e["uri"].removeprefix("file:") for e in manifest.trusted_files)
            write_atomic(depfile, f"{output} {sigfile}: {manifest_path} {deps}\n".encode())
    except OSError as exc:
        raise PylosError(f"cannot write signing output: {exc}") from None
    if quiet:
        return
    attrs = signed.sigstruct.attributes
    click.echo("Attributes (required for enclave measurement):")
    click.echo(f"    size:        {manifest.enclave_size:#x}")
    click.echo(f"    edmm:        {manifest.edmm}")
    click.echo(f"    max_threads: {manifest.max_threads}")
    click.echo(f"    isv_prod_id: {signed.sigstruct.isv_prod_id}")
    click.echo(f"    isv_svn:     {signed.sigstruct.isv_svn}")
    click.echo(f"    attr.flags:  {attrs.flags:#x}")
    click.echo(f"    attr.xfrm:   {attrs.xfrm:#x}")
    click.echo(f"    misc_select: {signed.sigstruct.misc_select:#x}")
    attestation = {"none": "None", "dcap": "DCAP/ECDSA"}[manifest.sgx["remote_attestation"]]
    click.echo(f"SGX remote attestation: {attestation}")
    if verbose:
        click.echo("Memory:")
        for area in describe_layout(signed.manifest_sgx, libos_hash_of(manifest),
                                  manifest.enclave_size, manifest.max_threads, manifest.edmm):
            click.echo(f"    {area.describe()}")
    click.echo("Measurement:")
    click.echo(f"    {signed.mr_enclave.hex()}")
    click.echo(f"Wrote {output} and {sigfile} (mr_signer {signed.mr_signer.hex()})")


def sigstruct_fields(sigstruct: Sigstruct) -> dict:
    return {
        "mr_enclave": sigstruct.enclave_hash.hex(),
        "mr_signer": sigstruct.mr_signer().hex(),
        "isv_prod_id": sigstruct.isv_prod_id,
        "isv_svn": sigstruct.isv_svn,
        "debug_enclave": sigstruct.attributes.debug,
        "attributes": {"flags": f"{sigstruct.attributes.flags:#018x}",
                       "xfrm": f"{sigstruct.attributes.xfrm:#018x}"},
        "attribute_mask": {"flags": f"{sigstruct.attribute_mask.flags:#018x}",
                           "xfrm": f"{sigstruct.attribute_mask.xfrm:#018x}"},
        "misc_select": f"{sigstruct.misc_select:#010x}",
        "misc_mask": f"{sigstruct.misc_mask:#010x}",
        "date": sigstruct.date.isoformat() if sigstruct.date else "0000-00-00",
        "signature_valid": sigstruct.verify(),
    }


@click.command("sigstruct-view")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--output-format", type=click.Choice(["text", "json"]), default=None,
              help="Gramine's spelling of --json.")
@click.option("-v", "--verbose", is_flag=True, hidden=True,
              help="Accepted for Gramine compatibility; every field is always shown.")
def sigstruct_view_cmd(file: Path, as_json: bool, output_format: str | None,
                       verbose: bool) -> None:
    """Show the fields of a SIGSTRUCT (.sig), pylos's or a real one.

    Exit status: 0 shown (see signature_valid), 1 not a SIGSTRUCT (one ERROR: line says why),
    2 usage error (unreadable file)."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise PylosError(f"cannot read '{file}': {exc.strerror}") from None
    with about(str(file)):
        fields = sigstruct_fields(Sigstruct.unpack(data))
    if as_json or output_format == "json":
        click.echo(json.dumps(fields, indent=2))
        return
    for name, value in fields.items():
        if isinstance(value, dict):
            value = f"flags {value['flags']}  xfrm {value['xfrm']}"
        click.echo(f"{name + ':':<17}{value}")


COMMANDS = [gen_key_cmd, sign_cmd, sigstruct_view_cmd]
