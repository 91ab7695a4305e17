"""Gramine's CI-Examples templates, verbatim (tests/data/gramine-templates/), render and validate
with the -D values their Makefiles pass (listed in tests/data/README.md)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pylos.hashing import HashCache
from pylos.manifest import Manifest

from support import EXAMPLES, gramine_template

ARCH_LIBDIR = "/lib/x86_64-linux-gnu"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> HashCache:
    # System files are old, so the racy window never applies: hash /lib once for the module.
    return HashCache(tmp_path_factory.mktemp("cache") / "hashes.json")


def render_and_expand(name: str, defines: dict, workdir: Path, cache: HashCache) -> Manifest:
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        manifest = Manifest.from_template(gramine_template(name), defines, name)
        manifest.check()
        manifest.expand_all_trusted_files(cache=cache)
        manifest.check()  # the expanded form is valid too
        return Manifest.loads(manifest.dumps(), name)  # and survives a TOML round trip
    finally:
        os.chdir(cwd)


def test_example_template_is_gramines_verbatim():
    name = "helloworld/helloworld.manifest.template"
    assert (EXAMPLES / name).read_text() == gramine_template(name)


def test_helloworld(tmp_path: Path, shared_cache: HashCache):
    shutil.copy("/bin/true", tmp_path / "helloworld")
    m = render_and_expand("helloworld/helloworld.manifest.template",
                          {"log_level": "error"}, tmp_path, shared_cache)
    uris = [e["uri"] for e in m.trusted_files]
    assert uris[0] == "file:helloworld"
    assert any(u.endswith("/runtime/glibc/libc.so.6") for u in uris)
    assert m.data["libos"]["entrypoint"] == "/helloworld"
    assert m.data["sgx"]["debug"] is True and m.data["sgx"]["edmm_enable"] is False


def test_helloworld_edmm_env(tmp_path: Path, shared_cache: HashCache,
                             monkeypatch: pytest.MonkeyPatch):
    shutil.copy("/bin/true", tmp_path / "helloworld")
    monkeypatch.setenv("EDMM", "1")
    m = render_and_expand("helloworld/helloworld.manifest.template",
                          {"log_level": "error"}, tmp_path, shared_cache)
    assert m.data["sgx"]["edmm_enable"] is True
    assert m.enclave_size == 1024 << 30


def test_python(tmp_path: Path, shared_cache: HashCache):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "helloworld.py").write_text("print('Hello World')\n")
    (tmp_path / "helper-files").mkdir()
    (tmp_path / "helper-files" / "hosts").write_text("127.0.0.1 localhost\n")
    entrypoint = os.path.realpath("/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                                  else shutil.which("python3"))
    m = render_and_expand(
        "python/python.manifest.template",
        {"log_level": "error", "arch_libdir": ARCH_LIBDIR, "entrypoint": entrypoint,
         "ra_type": "dcap"},
        tmp_path, shared_cache,
    )
    uris = {e["uri"] for e in m.trusted_files}
    assert f"file:{entrypoint}" in uris
    assert "file:scripts/helloworld.py" in uris and "file:helper-files/hosts" in uris
    assert len(uris) > 1000, "the python template trusts the whole sys.path"
    assert m.data["sgx"]["remote_attestation"] == "dcap"
    assert m.data["sgx"]["max_threads"] == 32
    mount_paths = [mount["path"] for mount in m.data["fs"]["mounts"]]
    assert mount_paths[:3] == ["/lib", ARCH_LIBDIR, f"/usr/{ARCH_LIBDIR}"]  # sic: "//"


def test_bash(tmp_path: Path, shared_cache: HashCache):
    (tmp_path / "scripts").mkdir()
    execdir = os.path.dirname(shutil.which("bash"))
    m = render_and_expand("bash/manifest.template",
                          {"log_level": "error", "execdir": execdir, "arch_libdir": ARCH_LIBDIR},
                          tmp_path, shared_cache)
    uris = {e["uri"] for e in m.trusted_files}
    assert f"file:{execdir}/bash" in uris
    assert m.data["sgx"]["allowed_files"] == ["file:scripts/"]
    assert m.data["loader"]["insecure__use_cmdline_argv"] is True


def test_redis(tmp_path: Path, shared_cache: HashCache):
    redis = shutil.which("redis-server") or "/bin/true"
    shutil.copy(redis, tmp_path / "redis-server")
    m = render_and_expand("redis/redis-server.manifest.template",
                          {"log_level": "error", "arch_libdir": ARCH_LIBDIR}, tmp_path,
                          shared_cache)
    assert m.data["loader"]["argv"] == ["redis-server", "--save", ""]
    assert m.enclave_size == 1024 << 20 and m.max_threads == 8
    assert m.trusted_files[0]["uri"] == "file:redis-server"
