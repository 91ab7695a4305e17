"""`pylos oci build` on the signed helloworld example: a valid OCI image (umoci, skopeo),
byte-identical when built twice, and run by podman where podman can run containers."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from support import EXAMPLES, PYLOS, run_pylos

REF = "localhost/pylos-helloworld:latest"
TOOLS_HINT = "apt-get install umoci skopeo podman runc (scripts/setup --tests installs them)"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed ({TOOLS_HINT})")
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """helloworld built and signed as its Makefile does."""
    directory = tmp_path_factory.mktemp("hello") / "helloworld"
    shutil.copytree(EXAMPLES / "helloworld", directory, ignore=shutil.ignore_patterns(
        "*.manifest", "*.manifest.sgx", "*.sig", "OUTPUT*", "helloworld"))
    key = directory.parent / "key.pem"
    assert run_pylos("gen-key", str(key)).returncode == 0
    env = {**os.environ, "PATH": f"{Path(PYLOS).parent}:{os.environ['PATH']}"}
    made = subprocess.run(["make", "SGX=1", f"SGX_SIGNER_KEY={key}"], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    return directory


@pytest.fixture(scope="module")
def image(app: Path) -> Path:
    built = run_pylos("oci", "build", "helloworld", cwd=app)
    assert built.returncode == 0, built.stderr
    assert f"Wrote helloworld.oci.tar ({REF}" in built.stdout
    return app / "helloworld.oci.tar"


def test_layout_config_and_reproducibility(app: Path, image: Path, tmp_path: Path):
    again = run_pylos("oci", "build", "helloworld", "-o", str(tmp_path / "again.tar"), cwd=app)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.tar").read_bytes() == image.read_bytes()

    with tarfile.open(image) as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile("index.json"))
        assert json.load(tar.extractfile("oci-layout")) == {"imageLayoutVersion": "1.0.0"}

        def blob(digest: str) -> bytes:
            data = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}").read()
            assert hashlib.sha256(data).hexdigest() == digest.removeprefix("sha256:")
            return data

        entry = index["manifests"][0]
        assert entry["annotations"]["org.opencontainers.image.ref.name"] == REF
        manifest = json.loads(blob(entry["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        layers = [blob(layer["digest"]) for layer in manifest["layers"]]
    assert sorted(n for n in names if not n.startswith("blobs/")) == [
        "blobs", "index.json", "oci-layout"]
    diff_ids = [f"sha256:{hashlib.sha256(gzip.decompress(layer)).hexdigest()}"
                for layer in layers]
    assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}
    assert config["config"]["Entrypoint"] == ["/opt/pylos/bin/pylos", "run", "/app/helloworld"]
    assert config["config"]["WorkingDir"] == "/app"
    sig = (app / "helloworld.sig").read_bytes()
    mr_enclave = json.loads(run_pylos("sigstruct-view", "--json", str(app / "helloworld.sig"))
                            .stdout)["mr_enclave"]
    assert config["config"]["Labels"]["org.pylos.mrenclave"] == mr_enclave
    # The app layer holds the signed app and its trusted binary, byte for byte.
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layers[2]))) as app_layer:
        assert app_layer.extractfile("app/helloworld.sig").read() == sig
        assert (app_layer.extractfile("app/helloworld").read()
                == (app / "helloworld").read_bytes())
        member = app_layer.getmember("app/helloworld")
        assert (member.uid, member.gid, member.uname) == (0, 0, "")


def test_skopeo_inspects_it(image: Path):
    skopeo = need("skopeo")
    result = subprocess.run([skopeo, "inspect", f"oci-archive:{image}"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["Os"] == "linux" and info["Architecture"] == "amd64"
    assert len(info["Layers"]) == 3
    assert info["Labels"]["org.pylos.app"] == "helloworld"


def test_umoci_unpacks_it(image: Path, tmp_path: Path):
    umoci = need("umoci")
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(image) as tar:
        tar.extractall(layout, filter="data")
    stat = subprocess.run([umoci, "stat", "--image", f"{layout}:{REF}"], capture_output=True,
                          text=True, timeout=120)
    assert stat.returncode == 0, stat.stderr
    assert "pylos oci build: helloworld" in stat.stdout
    bundle = tmp_path / "bundle"
    unpack = subprocess.run([umoci, "unpack", "--image", f"{layout}:{REF}", str(bundle)],
                            capture_output=True, text=True, timeout=300)
    assert unpack.returncode == 0, unpack.stderr
    rootfs = bundle / "rootfs"
    runtime = json.loads((bundle / "config.json").read_text())
    assert runtime["process"]["args"] == ["/opt/pylos/bin/pylos", "run", "/app/helloworld"]
    assert (rootfs / "app" / "helloworld.manifest.sgx").read_bytes() == (
        image.parent / "helloworld.manifest.sgx").read_bytes()
    # pylos and the Python it runs on are in the image, at the paths the launcher names.
    launcher = (rootfs / "opt/pylos/bin/pylos").read_text()
    assert launcher.startswith("#!/opt/pylos/bin/python3 -I\n")
    python = os.readlink(rootfs / "opt/pylos/bin/python3")
    assert (rootfs / python.lstrip("/")).is_file()
    assert (rootfs / "opt/pylos/lib").is_dir()
    assert list((rootfs / "opt/pylos/lib").glob("python3.*/site-packages/pylos/cli/main.py"))
    assert not list((rootfs / "opt/pylos/lib").glob("python3.*/site-packages/pytest"))


def test_a_trusted_file_changed_since_signing_is_refused(app: Path, tmp_path: Path):
    copy = tmp_path / "helloworld"
    shutil.copytree(app, copy, symlinks=True, ignore=shutil.ignore_patterns("*.oci.tar"))
    with open(copy / "helloworld", "ab") as f:
        f.write(b"\0")
    result = run_pylos("oci", "build", "helloworld", cwd=copy)
    assert result.returncode == 1
    assert "helloworld' changed since helloworld was signed" in result.stderr
    assert not (copy / "helloworld.oci.tar").exists()
    unsigned = run_pylos("oci", "build", "nothing-here", cwd=copy)
    assert unsigned.returncode == 2 and "nothing-here.manifest.sgx does not exist" in (
        unsigned.stderr)


def podman_command(storage: Path) -> list[str]:
    podman = need("podman")
    command = [podman, "--root", str(storage / "root"), "--runroot", str(storage / "run"),
               "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
               "--events-backend", "file"]
    # crun refuses hosts with cgroup v1 and v2 controllers both mounted ("hybrid"); runc runs.
    if shutil.which("runc"):
        command += ["--runtime", "runc"]
    return command


@pytest.fixture
def podman_storage():
    # podman refuses a run root path longer than 50 characters: pytest's tmp_path is longer.
    storage = Path(tempfile.mkdtemp(prefix="pylos-podman-", dir="/tmp"))
    yield storage
    shutil.rmtree(storage, ignore_errors=True)


def test_podman_runs_helloworld_in_the_image(image: Path, podman_storage: Path):
    podman = podman_command(podman_storage)
    if os.geteuid() != 0:
        pytest.skip("rootless podman needs subordinate uids for this image; run as root")
    # Below the host's hard limits: podman's defaults are above them, and raising a limit
    # needs CAP_SYS_RESOURCE, which this machine's root lacks.
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 16384)
    result = subprocess.run(
        [*podman, "run", "--rm", "--network=none", "--ulimit", f"nofile={nofile}:{nofile}",
         "--ulimit", f"nproc={nproc}:{nproc}",
         # pylos mounts a fresh /proc (refused while paths of /proc are masked) and installs
         # its seccomp listener in user namespaces (refused by podman's default profile).
         "--security-opt", "unmask=/proc/*", "--security-opt", "seccomp=unconfined",
         f"oci-archive:{image}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, world\n"
