"""`pylos oci import IMAGE.tar DIR`: a pylos workspace from a docker-save or OCI-layout image.

The layers are unpacked in order into `DIR/rootfs` with the OCI whiteouts applied (`.wh.NAME`
removes NAME from the layers below, `.wh..wh..opq` empties its directory of them), and
`DIR/APP.manifest.template` makes the image's file system the enclave's root (`fs.root`), every
file of it trusted, with `loader.argv` = Entrypoint + Cmd, `loader.env` = Env and
`fs.start_dir` = WorkingDir from the image config. `pylos manifest` + `pylos sign` + `pylos run
APP` in DIR then run the image's program in the enclave.

A layer is data from whoever built the image, so nothing in it may write outside `rootfs`: a
member with an absolute name or a `..` component, one whose path goes through a symbolic link,
a hard link to outside, or a relative symbolic link that climbs above the root is refused, with
the layer and the member named. Absolute symbolic links are rewritten relative (`/lib64/ld.so`
-> `../lib/...`), so that they resolve inside `rootfs` on the host, where `pylos sign` hashes
the files, as they do in the enclave's view. Set-uid/set-gid bits are dropped and device nodes
skipped: the rootfs is a host directory, owned by whoever imports it.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pylos.errors import InputError, PylosError
from pylos.oci.layout import ImageArchive, open_image

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ROOTFS = "rootfs"


@dataclass
class ImportedImage:
    workspace: Path
    app: str
    kind: str
    argv: list[str]
    entrypoint: str
    env: dict[str, str]
    workdir: str
    layers: int
    skipped: list[str] = field(default_factory=list)  # device nodes and FIFOs left out


class _Layer:
    """Unpacks one layer into `root`; every refusal names the layer and the member."""

    def __init__(self, root: Path, number: int, dir_modes: dict[Path, int]) -> None:
        self.root, self.number, self.dir_modes = root, number, dir_modes

    def refuse(self, member: tarfile.TarInfo, why: str) -> InputError:
        return InputError(f"layer {self.number}: '{member.name}': {why}; refusing the image")

    def parts(self, member: tarfile.TarInfo, name: str | None = None) -> list[str]:
        name = member.name if name is None else name
        if name.startswith("/"):
            raise self.refuse(member, "absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.refuse(member, "'..' in the path")
        return parts

    def parent(self, member: tarfile.TarInfo, parts: list[str], create: bool) -> Path | None:
        """The host directory holding `parts[-1]`; never through a symbolic link."""
        current = self.root
        for depth, part in enumerate(parts[:-1]):
            current = current / part
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(current, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                where = "/".join(parts[: depth + 1])
                raise self.refuse(member, f"the path goes through the symbolic link '/{where}' "
                                          f"(-> {os.readlink(current)})")
            if not stat.S_ISDIR(st.st_mode):
                raise self.refuse(member, f"'/{'/'.join(parts[: depth + 1])}' is not a "
                                          "directory")
        return current

    def whiteout(self, member: tarfile.TarInfo, parts: list[str]) -> None:
        parent = self.parent(member, parts, create=False)
        if parent is None:
            return
        if parts[-1] == OPAQUE:
            for child in os.listdir(parent):
                _remove(parent / child)
        else:
            victim = parent / parts[-1][len(WHITEOUT) :]
            if os.path.lexists(victim):
                _remove(victim)

    def symlink_target(self, member: tarfile.TarInfo, parts: list[str]) -> str:
        target = member.linkname
        if not target:
            raise self.refuse(member, "symbolic link without a target")
        if target.startswith("/"):
            # In the image the root is the image's root: make that explicit for the host.
            inside: list[str] = []
            for part in target.split("/"):
                if part == "..":
                    inside = inside[:-1]
                elif part not in ("", "."):
                    inside.append(part)
            return os.path.relpath("/" + "/".join(inside), "/" + "/".join(parts[:-1]))
        depth = len(parts) - 1
        for part in target.split("/"):
            depth += -1 if part == ".." else 0 if part in ("", ".") else 1
            if depth < 0:
                raise self.refuse(member, f"symbolic link to '{target}' climbs above the "
                                          "image's root")
        return target

    def add(self, archive_tar: tarfile.TarFile, member: tarfile.TarInfo,
            parts: list[str]) -> str | None:
        """Create one entry; a description of what was skipped, or None."""
        if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
            return f"/{'/'.join(parts)} (layer {self.number}: device node or FIFO)"
        parent = self.parent(member, parts, create=True)
        assert parent is not None
        dest = parent / parts[-1]
        existing = os.lstat(dest) if os.path.lexists(dest) else None
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                if existing is not None:
                    _remove(dest)
                os.mkdir(dest, 0o755)
            self.dir_modes[dest] = member.mode & 0o1777
            return None
        if existing is not None:
            _remove(dest)
        if member.issym():
            os.symlink(self.symlink_target(member, parts), dest)
        elif member.islnk():
            source_parts = self.parts(member, member.linkname)
            source_parent = self.parent(member, source_parts, create=False)
            source = source_parent / source_parts[-1] if source_parent and source_parts else None
            if source is None or not os.path.isfile(source) or os.path.islink(source):
                raise self.refuse(member, f"hard link to '{member.linkname}', which is not a "
                                          "regular file unpacked before it")
            os.link(source, dest)
            return None
        else:
            data = archive_tar.extractfile(member)
            assert data is not None
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(data, out)
            os.chmod(dest, member.mode & 0o777)  # no set-uid/set-gid/sticky on the host
        os.utime(dest, (member.mtime, member.mtime), follow_symlinks=False)
        return None


def _remove(path: Path) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def unpack_layers(archive: ImageArchive, root: Path) -> list[str]:
    """Unpack every layer of `archive` into `root`, lowest first: what was skipped."""
    skipped: list[str] = []
    dir_modes: dict[Path, int] = {}
    for index in range(len(archive.layers)):
        layer = _Layer(root, index + 1, dir_modes)
        with archive.open_layer(index) as (tar, members):
            entries = []
            # Whiteouts hide what the layers below hold, never what this one adds: apply
            # them first, wherever they stand in the tar.
            for member in members:
                parts = layer.parts(member)
                if not parts:
                    continue  # the root itself
                if parts[-1].startswith(WHITEOUT):
                    layer.whiteout(member, parts)
                else:
                    entries.append((member, parts))
            for member, parts in entries:
                note = layer.add(tar, member, parts)
                if note is not None:
                    skipped.append(note)
    for directory in sorted(dir_modes, key=lambda p: len(p.parts), reverse=True):
        if directory.is_dir() and not directory.is_symlink():
            os.chmod(directory, dir_modes[directory] | 0o700)  # the importer may clean up
    return skipped


def _image_config(archive: ImageArchive) -> tuple[list[str], dict[str, str], str]:
    config = archive.config.get("config") or {}
    if not isinstance(config, dict):
        raise archive.error("the image config's 'config' is not an object")

    def strings(key: str) -> list[str]:
        value = config.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise archive.error(f"config.{key} must be a list of strings, got {value!r}")
        return value

    argv = strings("Entrypoint") + strings("Cmd")
    if not argv:
        raise archive.error("the image has neither Entrypoint nor Cmd: nothing to run")
    env: dict[str, str] = {}
    for item in strings("Env"):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise archive.error(f"config.Env entry {item!r} is not NAME=VALUE")
        env[name] = value
    workdir = config.get("WorkingDir") or "/"
    if not isinstance(workdir, str) or not workdir.startswith("/"):
        raise archive.error(f"config.WorkingDir must be an absolute path, got {workdir!r}")
    return argv, env, workdir


def _find_entrypoint(rootfs: Path, argv0: str, env: dict[str, str], workdir: str,
                     archive: ImageArchive) -> str:
    """The path inside the image of the program argv[0] names (PATH searched as execvp
    does, in the image's file system)."""
    if "/" in argv0:
        return os.path.normpath(os.path.join(workdir, argv0))
    for directory in env.get("PATH", DEFAULT_PATH).split(":"):
        if not directory.startswith("/"):
            continue
        candidate = os.path.normpath(os.path.join(directory, argv0))
        host = os.path.realpath(str(rootfs) + candidate)
        if (host.startswith(str(rootfs.resolve()) + "/") and os.path.isfile(host)
                and os.access(host, os.X_OK)):
            return candidate
    raise archive.error(f"the entrypoint {argv0!r} is in none of the image's PATH directories "
                        f"({env.get('PATH', DEFAULT_PATH)})")


def _app_name(archive: ImageArchive) -> str:
    name = (archive.ref or "").rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip(".-")
    return name or "app"


# Where the template's two variables go in the TOML that tomli_w writes (the rest is kept
# out of Jinja's reach in raw blocks: an image's Cmd may well contain "{{").
_VARIABLES = {
    '"@pylos-oci:log_level@"': "\"{{ log_level | default('error') }}\"",
    '"@pylos-oci:debug@"': "{{ debug | default('false') }}",
}


def manifest_template(archive: ImageArchive, entrypoint: str, argv: list[str],
                      env: dict[str, str], workdir: str) -> str:
    import tomli_w

    log_level, debug = (token.strip('"') for token in _VARIABLES)
    data = {
        "libos": {"entrypoint": entrypoint},
        "loader": {"log_level": log_level, "argv": argv, "env": env},
        "fs": {"root": {"uri": f"file:{ROOTFS}"}, "start_dir": workdir,
               "mounts": [{"type": "tmpfs", "path": "/tmp"}]},
        "sgx": {"debug": debug, "enclave_size": "1G", "max_threads": 16,
                "trusted_files": [f"file:{ROOTFS}/"]},
    }
    body = tomli_w.dumps(data)
    if "endraw" in body or any(body.count(token) != 1 for token in _VARIABLES):
        raise archive.error("the image config contains text that would end the template's "
                            "raw block ('endraw', '@pylos-oci:')")
    for token, expression in _VARIABLES.items():
        body = body.replace(token, "{% endraw %}" + expression + "{% raw %}")
    ref = f" ({archive.ref})" if archive.ref else ""
    return (
        f"# Made by `pylos oci import` from {archive.path.name}{ref}, a {archive.kind} image:\n"
        "# loader.argv = its Entrypoint + Cmd, loader.env = its Env, fs.start_dir = its\n"
        "# WorkingDir. The enclave's root is the image's file system (rootfs/), every file of\n"
        "# it trusted. Render with `pylos manifest [-Dlog_level=L] [-Ddebug=true]`.\n"
        "{% raw %}" + body + "{% endraw %}"
    )


def import_image(image: Path, workspace: Path, name: str | None = None) -> ImportedImage:
    """Make `workspace` (which must not exist, or be empty) from the image tar `image`."""
    if workspace.exists() and (not workspace.is_dir() or any(workspace.iterdir())):
        raise PylosError(f"'{workspace}' exists and is not an empty directory")
    with open_image(image) as archive:
        return _import(archive, image, workspace, name)


def _import(archive: ImageArchive, image: Path, workspace: Path,
            name: str | None) -> ImportedImage:
    argv, env, workdir = _image_config(archive)
    app = name or _app_name(archive)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", app):
        raise PylosError(f"--name {app!r}: expected letters, digits, '.', '_' or '-'")
    workspace.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{workspace.name}.", dir=workspace.parent))
    try:
        rootfs = staging / ROOTFS
        rootfs.mkdir()
        skipped = unpack_layers(archive, rootfs)
        entrypoint = _find_entrypoint(rootfs, argv[0], env, workdir, archive)
        template = manifest_template(archive, entrypoint, argv, env, workdir)
        (staging / f"{app}.manifest.template").write_text(template)
        staging.chmod(0o755)
        if workspace.exists():
            workspace.rmdir()
        os.rename(staging, workspace)
    except OSError as exc:
        raise PylosError(f"cannot unpack '{image}' into '{workspace}': {exc}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return ImportedImage(workspace, app, archive.kind, argv, entrypoint, env, workdir,
                         len(archive.layers), skipped)
