"""`pylos mrenclave explain A B` on real builds: rendered, signed, then one thing changed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from support import run_pylos

TEMPLATE = """\
libos.entrypoint = "/app"
loader.log_level = "{{ log_level }}"
fs.mounts = [ { path = "/app", uri = "file:app" }, { path = "/lib", uri = "file:lib" } ]
sgx.debug = true
sgx.enclave_size = "{{ size }}"
sgx.max_threads = {{ threads }}
sgx.trusted_files = [ "file:app", "file:lib/" ]
"""
EXIT_DIFFER = 3


def build(directory: Path, key: Path, *, lib: bytes = b"lib v1", log_level: str = "error",
          size: str = "256M", threads: int = 4, date: str = "2024-01-02") -> Path:
    (directory / "lib").mkdir(parents=True)
    (directory / "app").write_bytes(b"app")
    (directory / "lib" / "libx.so").write_bytes(lib)
    (directory / "app.manifest.template").write_text(TEMPLATE)
    rendered = run_pylos("manifest", f"-Dlog_level={log_level}", f"-Dsize={size}",
                         f"-Dthreads={threads}", "app.manifest.template", "app.manifest",
                         cwd=directory)
    assert rendered.returncode == 0, rendered.stderr
    signed = run_pylos("sign", "-q", "-m", "app.manifest", "-k", str(key), "--date", date,
                       cwd=directory)
    assert signed.returncode == 0, signed.stderr
    return directory


def explain(a: Path, b: Path) -> tuple[int, dict, str]:
    as_json = run_pylos("mrenclave", "explain", "--json", str(a), str(b))
    text = run_pylos("mrenclave", "explain", str(a), str(b))
    assert as_json.returncode == text.returncode, (as_json.stderr, text.stderr)
    return as_json.returncode, json.loads(as_json.stdout), text.stdout


def mr_enclave(sig: Path) -> str:
    view = run_pylos("sigstruct-view", "--json", str(sig))
    return json.loads(view.stdout)["mr_enclave"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, key: Path) -> Path:
    return build(tmp_path_factory.mktemp("base") / "app", key)


def test_identical_builds(tmp_path: Path, key: Path, base: Path):
    again = build(tmp_path / "elsewhere" / "app", key)
    status, report, text = explain(base, again)
    assert status == 0
    assert report["equal"] is True
    assert report["a"]["mr_enclave"] == report["b"]["mr_enclave"] == mr_enclave(base / "app.sig")
    for section in ("manifest_keys", "trusted_files", "enclave", "layout", "sigstruct"):
        assert report[section] == [], section
    assert report["first_difference"] is None and report["notes"] == []
    assert f"MRENCLAVE is the same: {mr_enclave(base / 'app.sig')}" in text


def test_one_key(tmp_path: Path, key: Path, base: Path):
    other = build(tmp_path / "app", key, log_level="debug")
    status, report, text = explain(base, other)
    assert status == EXIT_DIFFER
    assert report["a"]["mr_enclave"] == mr_enclave(base / "app.sig")
    assert report["b"]["mr_enclave"] == mr_enclave(other / "app.sig")
    assert report["manifest_keys"] == [{"name": "loader.log_level", "a": "error", "b": "debug"}]
    assert report["trusted_files"] == [] and report["enclave"] == [] and report["layout"] == []
    first = report["first_difference"]
    assert first["operation"] == "EEXTEND" and first["area"] == "manifest"
    assert "in [loader]" in first["detail"] and """'log_level = "debug"'""" in first["detail"]
    assert 'loader.log_level: "error" → "debug"' in text
    assert "MRENCLAVE differs:" in text


def test_one_trusted_file(tmp_path: Path, key: Path, base: Path):
    other = build(tmp_path / "app", key, lib=b"lib v2")
    status, report, text = explain(base / "app.manifest.sgx", other / "app.manifest.sgx")
    assert status == EXIT_DIFFER
    assert report["manifest_keys"] == [] and report["enclave"] == []
    old, new = (hashlib.sha256(v).hexdigest() for v in (b"lib v1", b"lib v2"))
    assert report["trusted_files"] == [{"name": "file:lib/libx.so", "a": old, "b": new}]
    assert f"    A sha256 {old}" in text and f"    B sha256 {new}" in text
    first = report["first_difference"]
    assert first["operation"] == "EEXTEND" and first["area"] == "manifest"
    assert new[:8] in first["detail"]  # the differing byte lies in the hash's line


def test_enclave_size(tmp_path: Path, key: Path, base: Path):
    other = build(tmp_path / "app", key, size="512M")
    status, report, text = explain(base, other)
    assert status == EXIT_DIFFER
    assert report["manifest_keys"] == [{"name": "sgx.enclave_size", "a": "256M", "b": "512M"}]
    assert report["trusted_files"] == []
    assert report["enclave"] == [{"name": "enclave size", "a": "0x10000000", "b": "0x20000000"}]
    assert report["layout"] == [{"name": "every area", "a": "placed below 0x10000000",
                                 "b": "placed below 0x20000000 (moved by +0x10000000)"}]
    assert report["first_difference"] == {
        "index": 0, "operation": "ECREATE", "offset": None, "area": None,
        "detail": "SIZE 0x10000000 → 0x20000000 (SSAFRAMESIZE 1 page on both)"}
    assert "first differing measurement record: #0 ECREATE" in text


def test_thread_count_changes_the_layout(tmp_path: Path, key: Path, base: Path):
    other = build(tmp_path / "app", key, threads=5)
    status, report, _ = explain(base, other)
    assert status == EXIT_DIFFER
    assert {"name": "max threads", "a": 4, "b": 5} in report["enclave"]
    names = [change["name"] for change in report["layout"]]
    assert names == ["tcs[4]", "ssa[4]"]
    assert report["layout"][0]["a"] is None
    first = report["first_difference"]
    # Records go in ascending addresses: B's extra thread sits lowest, so the first EADD moves.
    assert first["operation"] == "EADD" and first["index"] == 1


def test_sigs_only_say_what_the_sigstructs_hold(tmp_path: Path, key: Path, base: Path):
    redated = build(tmp_path / "redated", key, date="2030-05-06")
    status, report, text = explain(base / "app.sig", redated / "app.sig")
    assert status == 0  # the date is outside the measurement
    assert report["sigstruct"] == [{"name": "date", "a": "2024-01-02", "b": "2030-05-06"}]
    assert 'date: "2024-01-02" → "2030-05-06"' in text
    other = build(tmp_path / "other", key, log_level="debug")
    status, report, text = explain(base / "app.sig", other / "app.sig")
    assert status == EXIT_DIFFER
    assert report["manifest_keys"] == [] and report["first_difference"] is None
    assert "cannot be taken apart" in report["notes"][0] and "cannot be taken apart" in text


def test_edit_no_key_explains_points_at_the_line(tmp_path: Path, base: Path):
    """A comment added to a .manifest.sgx after signing: same keys, another measurement; the
    record walk names the line, and the stale .sig is reported."""
    edited = tmp_path / "app"
    shutil.copytree(base, edited)
    manifest = edited / "app.manifest.sgx"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join([*lines[:3], "# edited\n", *lines[3:]]))
    status, report, _ = explain(base, edited)
    assert status == EXIT_DIFFER
    assert report["manifest_keys"] == [] and report["trusted_files"] == []
    assert "line 4" in report["first_difference"]["detail"]
    assert "'# edited'" in report["first_difference"]["detail"]
    assert any("does not match" in note and "app.sig" in note for note in report["notes"])


def test_bad_inputs_name_the_file(tmp_path: Path, base: Path):
    not_sig = tmp_path / "junk.sig"
    not_sig.write_bytes(b"x" * 100)
    result = run_pylos("mrenclave", "explain", str(not_sig), str(base / "app.sig"))
    assert result.returncode == 1
    assert str(not_sig) in result.stderr and "1808 bytes" in result.stderr

    truncated = tmp_path / "cut" / "app.manifest.sgx"
    truncated.parent.mkdir()
    text = (base / "app.manifest.sgx").read_text()
    truncated.write_text(text[: text.index("[loader]") + 4])
    result = run_pylos("mrenclave", "explain", str(base), str(truncated))
    assert result.returncode == 1 and str(truncated) in result.stderr
    assert "Traceback" not in result.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_pylos("mrenclave", "explain", str(empty), str(base))
    assert result.returncode == 2 and "found none" in result.stderr
    two = tmp_path / "two"
    shutil.copytree(base, two)
    shutil.copy(two / "app.manifest.sgx", two / "b.manifest.sgx")
    result = run_pylos("mrenclave", "explain", str(two), str(base))
    assert result.returncode == 2 and "app.manifest.sgx, b.manifest.sgx" in result.stderr

    result = run_pylos("mrenclave", "explain", str(base / "app.manifest"), str(base))
    assert result.returncode == 2 and "expected a .sig" in result.stderr
