from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pylos import hashing
from pylos.errors import PylosError
from pylos.hashing import HashCache
from pylos.manifest.trusted import expand_trusted_files


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"a")
    (root / "b" / "z.txt").write_bytes(b"z")
    (root / "b" / "deep" / "c.txt").write_bytes(b"c")
    (root / "c.txt").write_bytes(b"top")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    (root / "linkdir").symlink_to(outside)          # symlinked dir: not descended
    (root / "linkfile").symlink_to(root / "a.txt")  # symlink to a regular file: kept
    (root / "dangling").symlink_to(tmp_path / "nope")
    os.mkfifo(root / "fifo")                         # neither file nor dir: skipped
    return root


def uris(entries: list[dict]) -> list[str]:
    return [e["uri"] for e in entries]


def test_directory_expansion_is_recursive_sorted_and_regular_files_only(tree: Path):
    out = expand_trusted_files([{"uri": f"file:{tree}/"}])
    assert uris(out) == [f"file:{tree}/{n}" for n in
                         ["a.txt", "b/deep/c.txt", "b/z.txt", "c.txt", "linkfile"]]
    assert out[0]["sha256"] == sha(b"a") == out[4]["sha256"]


def test_relative_uris_stay_relative(tree: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tree.parent)
    out = expand_trusted_files([{"uri": "file:tree/b/"}, {"uri": "file:tree/c.txt"}])
    assert uris(out) == ["file:tree/b/deep/c.txt", "file:tree/b/z.txt", "file:tree/c.txt"]


def test_directory_without_slash_and_file_with_slash_are_errors(tree: Path):
    with pytest.raises(PylosError, match="directory URI must end with '/'"):
        expand_trusted_files([{"uri": f"file:{tree}/b"}])
    with pytest.raises(PylosError, match="not a directory"):
        expand_trusted_files([{"uri": f"file:{tree}/a.txt/"}])
    with pytest.raises(PylosError, match="cannot carry sha256"):
        expand_trusted_files([{"uri": f"file:{tree}/", "sha256": "00"}])


def test_missing_trusted_file_uses_gramine_message(tree: Path):
    with pytest.raises(PylosError, match=f"Missing trusted file: '{tree}/missing'"):
        expand_trusted_files([{"uri": f"file:{tree}/missing"}])


def test_only_file_uris(tree: Path):
    with pytest.raises(PylosError, match="Unsupported URI type"):
        expand_trusted_files([{"uri": "dev:tty"}])


def test_duplicates_kept_once_and_conflicting_hashes_rejected(tree: Path):
    a = f"file:{tree}/a.txt"
    out = expand_trusted_files([{"uri": a}, {"uri": f"file:{tree}/"}, {"uri": a}])
    assert uris(out).count(a) == 1 and uris(out)[0] == a
    with pytest.raises(PylosError, match="two different sha256"):
        expand_trusted_files([{"uri": a, "sha256": "11"}, {"uri": a, "sha256": "22"}])


def test_given_hash_is_not_recomputed(tree: Path):
    out = expand_trusted_files([{"uri": f"file:{tree}/a.txt", "sha256": "ab" * 32}])
    assert out == [{"uri": f"file:{tree}/a.txt", "sha256": "ab" * 32}]


def test_chroot_requires_absolute_paths_and_looks_inside(tree: Path):
    out = expand_trusted_files([{"uri": "file:/b/z.txt"}], chroot=tree)
    assert out == [{"uri": "file:/b/z.txt", "sha256": sha(b"z")}]
    with pytest.raises(PylosError, match="must be absolute"):
        expand_trusted_files([{"uri": "file:b/z.txt"}], chroot=tree)


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = hashing._hash_one

    def spy(path: str):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(hashing, "_hash_one", spy)
    return calls


def test_same_inode_hashed_once(tree: Path, hash_calls: list[str]):
    os.link(tree / "c.txt", tree / "hardlink.txt")
    out = expand_trusted_files([{"uri": f"file:{tree}/"}])
    by_uri = {e["uri"]: e["sha256"] for e in out}
    assert by_uri[f"file:{tree}/hardlink.txt"] == by_uri[f"file:{tree}/c.txt"] == sha(b"top")
    assert by_uri[f"file:{tree}/linkfile"] == sha(b"a")
    assert len(hash_calls) == 4  # a, deep/c, z, c (hard link and symlink share inodes)


def test_cache_skips_unchanged_files_and_notices_changes(
    tree: Path, tmp_path: Path, hash_calls: list[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(hashing, "RACY_WINDOW_NS", 0)
    cache_file = tmp_path / "cache.marshal"
    entries = [{"uri": f"file:{tree}/"}]
    first = expand_trusted_files(entries, cache=HashCache(cache_file))
    assert len(hash_calls) == 4 and cache_file.exists()
    hash_calls.clear()
    assert expand_trusted_files(entries, cache=HashCache(cache_file)) == first
    assert hash_calls == []
    (tree / "b" / "z.txt").write_bytes(b"Z")  # same size, new content
    third = expand_trusted_files(entries, cache=HashCache(cache_file))
    assert hash_calls == [str(tree / "b" / "z.txt")]
    assert {e["uri"]: e["sha256"] for e in third}[f"file:{tree}/b/z.txt"] == sha(b"Z")


def test_cache_does_not_store_racily_fresh_files(tree: Path, tmp_path: Path,
                                                 hash_calls: list[str]):
    cache_file = tmp_path / "cache.marshal"
    expand_trusted_files([{"uri": f"file:{tree}/a.txt"}], cache=HashCache(cache_file))
    hash_calls.clear()
    expand_trusted_files([{"uri": f"file:{tree}/a.txt"}], cache=HashCache(cache_file))
    assert hash_calls == [str(tree / "a.txt")]


def test_damaged_cache_is_ignored(tree: Path, tmp_path: Path):
    cache_file = tmp_path / "cache.marshal"
    cache_file.write_text("{not json")
    out = expand_trusted_files([{"uri": f"file:{tree}/a.txt"}], cache=HashCache(cache_file))
    assert out[0]["sha256"] == sha(b"a")


def test_progress_callback_sees_every_file(tree: Path):
    seen: list[tuple[int, int, int]] = []
    expand_trusted_files([{"uri": f"file:{tree}/"}],
                         progress=lambda total: lambda d, t, n: seen.append((d, t, n)))
    assert [(d, t) for d, t, _ in seen][-1] == (4, 4)
    assert sorted(n for _, _, n in seen) == [1, 1, 1, 3]  # each inode once, with its size
