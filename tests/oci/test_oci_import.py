"""`pylos oci import`: docker-save and OCI-layout images unpacked (whiteouts applied, hostile
layers refused) into a workspace whose manifest runs the image's program under `pylos run`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from pylos.oci.layout import (
    MEDIA_CONFIG,
    MEDIA_LAYER_GZIP,
    MEDIA_MANIFEST,
    Entry,
    Layer,
    write_image_tar,
    write_json_blob,
    write_layer,
)
from pylos.workspace.elfdeps import Resolver

from support import run_pylos

SCRIPT = ('pwd; echo "$GREETING"; cat /etc/greeting; echo /opt/stuff/*; '
          'test -e /etc/old-config || echo old-config-gone')
EXPECTED = "/srv\nhi from env\nhello from layer 2\n/opt/stuff/c\nold-config-gone\n"
CONFIG = {"architecture": "amd64", "os": "linux", "config": {
    "Entrypoint": ["sh", "-c"], "Cmd": [SCRIPT],
    "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hi from env"],
    "WorkingDir": "/srv"}}

Member = tuple[str, str, bytes | str, int]  # (name, kind, content or link target, mode)


def host_program_members() -> list[Member]:
    """/bin/sh and cat with their libraries, laid out as a merged-/usr Debian image:
    bin, lib, lib64 are links into usr/, the loader link is absolute (as Debian's)."""
    members: list[Member] = [("bin", "symlink", "usr/bin", 0o777),
                             ("lib", "symlink", "usr/lib", 0o777),
                             ("lib64", "symlink", "usr/lib64", 0o777)]
    resolver = Resolver()
    libs: set[str] = set()
    for program in ("sh", "cat"):
        host = os.path.realpath(shutil.which(program))
        members.append((f"usr/bin/{program}", "file", Path(host).read_bytes(), 0o755))
        deps = resolver.resolve(host)
        libs.update(os.path.realpath(lib) for lib in deps.libraries)
        libs.add(os.path.realpath(deps.interp_host))
    for lib in sorted(libs):
        members.append((f"usr/lib/x86_64-linux-gnu/{Path(lib).name}", "file",
                        Path(lib).read_bytes(), 0o755))
    members.append(("usr/lib64/ld-linux-x86-64.so.2", "symlink",
                    "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 0o777))
    return members


def base_layer() -> list[Member]:
    return [*host_program_members(),
            ("etc/old-config", "file", b"to be whited out\n", 0o644),
            ("opt/stuff/a", "file", b"a", 0o644), ("opt/stuff/b", "file", b"b", 0o644),
            ("srv", "dir", b"", 0o755)]


TOP_LAYER: list[Member] = [("etc/greeting", "file", b"hello from layer 2\n", 0o644),
                           ("etc/.wh.old-config", "file", b"", 0o644),
                           ("opt/stuff/.wh..wh..opq", "file", b"", 0o644),
                           ("opt/stuff/c", "file", b"c", 0o644)]


def layer_tar(members: list[Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, content, mode in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if kind == "file":
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                             "hardlink": tarfile.LNKTYPE}[kind]
                info.linkname = content if isinstance(content, str) else ""
                tar.addfile(info)
    return out.getvalue()


def docker_save(path: Path, layers: list[list[Member]], config: dict = CONFIG,
                tag: str = "example/shell:1") -> Path:
    """A `docker save` archive: manifest.json, the config, one layer.tar per layer."""
    tars = [layer_tar(members) for members in layers]
    diff_ids = [f"sha256:{hashlib.sha256(t).hexdigest()}" for t in tars]
    config = {**config, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    files = {config_name: config_bytes}
    names = []
    for data, diff_id in zip(tars, diff_ids, strict=True):
        names.append(f"{diff_id[7:]}/layer.tar")
        files[names[-1]] = data
    files["manifest.json"] = json.dumps([{"Config": config_name, "RepoTags": [tag],
                                          "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def oci_layout(path: Path, layers: list[list[Member]], scratch: Path) -> Path:
    """The same image as an OCI layout tar, written with pylos.oci.layout."""
    blobs, diff_ids = [], []
    for members in layers:
        layer = Layer("test")
        for name, kind, content, mode in members:
            if kind == "file":
                layer.add(name, Entry("file", mode, data=content))
            elif kind == "symlink":
                layer.add(name, Entry("symlink", mode, target=content))
            else:
                layer.add(name, Entry(kind, mode))
        blob, diff_id = write_layer(layer, scratch, None)
        blobs.append(blob)
        diff_ids.append(diff_id)
    config, _ = write_json_blob({**CONFIG, "rootfs": {"type": "layers", "diff_ids": diff_ids}},
                                scratch)
    manifest, _ = write_json_blob({
        "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"digest": b.digest, "size": b.size, "mediaType": MEDIA_LAYER_GZIP}
                   for b in blobs]},
        scratch)
    index = {"schemaVersion": 2, "manifests": [{"mediaType": MEDIA_MANIFEST,
                                                "digest": manifest.digest, "size": manifest.size,
                                                "annotations": {
                                                    "org.opencontainers.image.ref.name":
                                                    "example/shell:1"}}]}
    write_image_tar(path, index, [*blobs, config, manifest], None)
    return path


def sign_and_run(workspace: Path, app: str, key: Path) -> subprocess.CompletedProcess:
    rendered = run_pylos("manifest", f"{app}.manifest.template", f"{app}.manifest",
                         cwd=workspace)
    assert rendered.returncode == 0, rendered.stderr
    signed = run_pylos("sign", "-q", "-m", f"{app}.manifest", "-k", str(key), cwd=workspace)
    assert signed.returncode == 0, signed.stderr
    return run_pylos("run", app, cwd=workspace)


@pytest.mark.parametrize("kind", ["docker-save", "oci"])
def test_import_sign_run(tmp_path: Path, key: Path, kind: str):
    layers = [base_layer(), TOP_LAYER]
    if kind == "docker-save":
        image = docker_save(tmp_path / "shell.tar", layers)
    else:
        scratch = tmp_path / "blobs"
        scratch.mkdir()
        image = oci_layout(tmp_path / "shell.tar", layers, scratch)
    imported = run_pylos("oci", "import", str(image), str(tmp_path / "ws"))
    assert imported.returncode == 0, imported.stderr
    assert f"Imported 2 layer(s) of {image} ({kind})" in imported.stdout
    workspace = tmp_path / "ws"
    rootfs = workspace / "rootfs"
    # Whiteouts applied; links kept, the absolute one made relative to stay in rootfs.
    assert not (rootfs / "etc/old-config").exists()
    assert sorted(os.listdir(rootfs / "opt/stuff")) == ["c"]
    assert os.readlink(rootfs / "lib") == "usr/lib"
    assert os.readlink(rootfs / "usr/lib64/ld-linux-x86-64.so.2") == (
        "../../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    template = (workspace / "shell.manifest.template").read_text()
    assert 'entrypoint = "/usr/bin/sh"' in template and 'start_dir = "/srv"' in template
    result = sign_and_run(workspace, "shell", key)
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPECTED


def test_round_trip_of_an_oci_build_image(tmp_path: Path, key: Path):
    """An image `pylos oci build` made, imported back: rootfs and the image config as built."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "hello.sh").write_text("echo round trip\n")
    (app / "hello.manifest.template").write_text(
        'libos.entrypoint = "/hello.sh"\nfs.mounts = [ { path = "/hello.sh", uri = '
        '"file:hello.sh" } ]\nsgx.trusted_files = [ "file:hello.sh" ]\n')
    assert run_pylos("manifest", "hello.manifest.template", "hello.manifest",
                     cwd=app).returncode == 0
    assert run_pylos("sign", "-q", "-m", "hello.manifest", "-k", str(key),
                     cwd=app).returncode == 0
    built = run_pylos("oci", "build", "hello", "--workdir", "/srv/hello", cwd=app)
    assert built.returncode == 0, built.stderr
    imported = run_pylos("oci", "import", str(app / "hello.oci.tar"), str(tmp_path / "ws"))
    assert imported.returncode == 0, imported.stderr
    rootfs = tmp_path / "ws" / "rootfs"
    for name in ("hello.manifest.sgx", "hello.sig", "hello.sh"):
        assert (rootfs / "srv/hello" / name).read_bytes() == (app / name).read_bytes()
    template = (tmp_path / "ws" / "pylos-hello.manifest.template").read_text()
    assert '"/opt/pylos/bin/pylos",\n    "run",\n    "/srv/hello/hello",' in template
    assert 'start_dir = "/srv/hello"' in template and 'HOME = "/root"' in template


def test_skopeo_docker_archive_imports(tmp_path: Path, key: Path):
    """A docker-save archive written by skopeo (a real producer) imports and runs."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        pytest.skip("skopeo is not installed (scripts/setup --tests installs it)")
    scratch = tmp_path / "blobs"
    scratch.mkdir()
    oci = oci_layout(tmp_path / "shell.oci.tar", [base_layer(), TOP_LAYER], scratch)
    docker = tmp_path / "shell.docker.tar"
    copied = subprocess.run([skopeo, "copy", f"oci-archive:{oci}",
                             f"docker-archive:{docker}:example/shell:2"],
                            capture_output=True, text=True, timeout=120)
    assert copied.returncode == 0, copied.stderr
    imported = run_pylos("oci", "import", str(docker), str(tmp_path / "ws"))
    assert imported.returncode == 0, imported.stderr
    result = sign_and_run(tmp_path / "ws", "shell", key)
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPECTED


@pytest.mark.parametrize(("layers", "message"), [
    ([[("/etc/evil", "file", b"x", 0o644)]], "'/etc/evil': absolute path"),
    ([[("../evil", "file", b"x", 0o644)]], "'../evil': '..' in the path"),
    ([[("a/../../evil", "file", b"x", 0o644)]], "'..' in the path"),
    ([[("escape", "symlink", "OUTSIDE", 0o777)], [("escape/evil", "file", b"x", 0o644)]],
     "layer 2: 'escape/evil': the path goes through the symbolic link '/escape'"),
    ([[("up", "symlink", "../../..", 0o777)]], "'up': symbolic link to '../../..' climbs"),
    ([[("pw", "hardlink", "../../etc/passwd", 0o644)]], "'pw': '..' in the path"),
])
def test_hostile_layers_are_refused(tmp_path: Path, layers: list[list[Member]], message: str):
    outside = tmp_path / "outside"
    outside.mkdir()
    layers = [[(n, k, str(outside) if c == "OUTSIDE" else c, m) for n, k, c, m in layer]
              for layer in layers]
    image = docker_save(tmp_path / "evil.tar", layers)
    result = run_pylos("oci", "import", str(image), str(tmp_path / "ws"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr and "refusing the image" in result.stderr
    assert str(image) in result.stderr or "layer" in result.stderr
    assert os.listdir(outside) == [] and not (tmp_path / "evil").exists()
    assert not (tmp_path / "ws").exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".ws.")] == []


def test_tampered_layer_and_bad_archives(tmp_path: Path):
    image = docker_save(tmp_path / "img.tar", [TOP_LAYER])
    with tarfile.open(image) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    layer_name = next(n for n in files if n.endswith("layer.tar"))
    files[layer_name] = layer_tar([("etc/greeting", "file", b"tampered\n", 0o644)])
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(tampered, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = run_pylos("oci", "import", str(tampered), str(tmp_path / "ws"))
    assert result.returncode == 1 and "the config's diff_id is" in result.stderr

    not_tar = tmp_path / "junk.tar"
    not_tar.write_bytes(b"no tar here" * 100)
    result = run_pylos("oci", "import", str(not_tar), str(tmp_path / "ws"))
    assert result.returncode == 1 and f"{not_tar}: not a tar archive" in result.stderr

    empty_cmd = docker_save(tmp_path / "nocmd.tar", [TOP_LAYER], {"config": {}})
    result = run_pylos("oci", "import", str(empty_cmd), str(tmp_path / "ws"))
    assert result.returncode == 1 and "neither Entrypoint nor Cmd" in result.stderr

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("mine")
    result = run_pylos("oci", "import", str(image), str(tmp_path / "busy"))
    assert result.returncode == 2 and "is not an empty directory" in result.stderr
    assert (tmp_path / "busy" / "file").read_text() == "mine"
