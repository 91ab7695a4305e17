"""`pylos pf gen-key|encrypt|decrypt` end to end, including every bad input (exit 2, a message
naming the file and the failed check, and no output left behind)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pf_support import GT, SIZES, walk, wrap_key

from support import run_pylos

KEY = str(GT / "wrap_key.bin")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_gen_key(tmp_path: Path) -> None:
    key = tmp_path / "k"
    result = run_pylos("pf", "gen-key", "-w", str(key))
    assert result.returncode == 0, result.stderr
    assert len(key.read_bytes()) == 16
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_bytes()
    result = run_pylos("pf", "gen-key", "-w", str(key))
    assert result.returncode == 2 and "already exists" in result.stderr and "--force" in result.stderr
    assert key.read_bytes() == first
    assert run_pylos("pf", "gen-key", "-w", str(key), "--force").returncode == 0
    assert key.read_bytes() != first
    result = run_pylos("pf", "gen-key", "-w", str(tmp_path / "missing" / "k"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_decrypt_ground_truth_with_verify(tmp_path: Path) -> None:
    """The bound path is checked against the (normalized) -i path: give the files under the
    names Gramine encrypted them for (symlinks to the ground truth, read in place)."""
    (tmp_path / "encrypted").mkdir()
    for name in SIZES:
        (tmp_path / "encrypted" / f"{name}.bin").symlink_to(GT / f"enc_v1_{name}.pf")
    result = run_pylos("pf", "decrypt", "-w", KEY, "-i", "./encrypted//", "-o", "out", "-V",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in SIZES:
        assert (tmp_path / "out" / f"{name}.bin").read_bytes() == (
            GT / f"plain_{name}.bin").read_bytes()
    # the same file under another name: refused with -V, accepted without (as Gramine)
    result = run_pylos("pf", "decrypt", "-w", KEY, "-i", str(GT / "enc_v2_small.pf"), "-o",
                       "x", "-V", cwd=tmp_path)
    assert result.returncode == 1
    assert "enc_v2_small.pf" in result.stderr and "bound to path 'encrypted/small.bin'" in (
        result.stderr)
    assert not (tmp_path / "x").exists()
    result = run_pylos("pf", "decrypt", "-w", KEY, "-i", str(GT / "enc_v2_small.pf"), "-o",
                       "x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x").read_bytes() == (GT / "plain_small.bin").read_bytes()


def test_encrypt_tree_binds_output_paths(tmp_path: Path) -> None:
    src = tmp_path / "plain"
    (src / "sub" / "deeper").mkdir(parents=True)
    contents = {"a.txt": b"alpha", "sub/b.bin": os.urandom(70000),
                "sub/deeper/empty": b"", "sub/deeper/c": os.urandom(3072)}
    for rel, data in contents.items():
        (src / rel).write_bytes(data)
    os.mkfifo(src / "fifo")  # not a regular file: skipped like Gramine does
    result = run_pylos("pf", "encrypt", "-w", KEY, "-i", "plain", "-o", "./enc//mount/",
                       "-v", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Encrypted 4 file(s)" in result.stderr
    for rel, data in contents.items():
        info = walk((tmp_path / "enc" / "mount" / rel).read_bytes(), wrap_key())
        assert info["plain"] == data
        assert info["path"] == f"enc/mount/{rel}"  # the -o path as given, normalized
    assert not (tmp_path / "enc" / "mount" / "fifo").exists()
    # round trip with -V: the input paths match the bound ones
    result = run_pylos("pf", "decrypt", "-w", KEY, "-i", "enc/mount", "-o", "back", "-V",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for rel, data in contents.items():
        assert (tmp_path / "back" / rel).read_bytes() == data
    # in place, like gramine-sgx-pf-crypt: the input is read before the output replaces it
    result = run_pylos("pf", "encrypt", "-w", KEY, "-i", "plain/a.txt", "-o", "plain/a.txt",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert walk((src / "a.txt").read_bytes(), wrap_key())["plain"] == b"alpha"


def test_bad_inputs_leave_no_output(tmp_path: Path) -> None:
    enc = tmp_path / "enc"
    enc.mkdir()
    for name in ("good1", "good2", "bad"):
        (tmp_path / name).write_bytes(os.urandom(20000))
    for name in ("good1", "good2", "bad"):
        assert run_pylos("pf", "encrypt", "-w", KEY, "-i", name, "-o", f"enc/{name}",
                         cwd=tmp_path).returncode == 0
    good = (enc / "bad").read_bytes()
    cases = {  # corruption -> (check named in the message)
        "flipped": (good[:3 * 4096 + 7] + bytes([good[3 * 4096 + 7] ^ 4]) + good[3 * 4096 + 8:],
                    "data node 1 (node 3): MAC mismatch"),
        "truncated": (good[:-4096], "truncated"),
        "extended": (good + bytes(4096), "extended"),
        "not-a-pf": (b"hello" * 2000, "not a protected file"),
    }
    for case, (data, message) in cases.items():
        (enc / "bad").write_bytes(data)
        result = run_pylos("pf", "decrypt", "-w", KEY, "-i", "enc", "-o", "out/tree",
                           cwd=tmp_path)
        assert result.returncode == 1, case  # rejected input
        assert "enc/bad" in result.stderr and message in result.stderr, (case, result.stderr)
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "out").exists(), case  # nothing, not even the good files
    (enc / "bad").write_bytes(good)
    # swapped files: each is bound to its own path
    (enc / "good1").write_bytes((enc / "good2").read_bytes())
    result = run_pylos("pf", "decrypt", "-w", KEY, "-i", "enc", "-o", "out", "-V", cwd=tmp_path)
    assert result.returncode == 1 and "bound to path 'enc/good2'" in result.stderr
    assert _files(tmp_path / "enc") == ["bad", "good1", "good2"]
    assert not (tmp_path / "out").exists()
    # wrong key
    other = tmp_path / "other.key"
    other.write_bytes(bytes(16))
    result = run_pylos("pf", "decrypt", "-w", str(other), "-i", "enc/bad", "-o", "x",
                       cwd=tmp_path)
    assert result.returncode == 1 and "wrong key" in result.stderr
    # bad key files, missing input
    (tmp_path / "short.key").write_bytes(b"abc")
    for args, message in [
        (["-w", "short.key", "-i", "good1", "-o", "y"], "is 3 bytes; a wrap key is 16 raw bytes"),
        (["-w", "nokey", "-i", "good1", "-o", "y"], "cannot read wrap key 'nokey'"),
        (["-w", KEY, "-i", "missing", "-o", "y"], "cannot read input 'missing'"),
    ]:
        result = run_pylos("pf", "encrypt", *args, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert not (tmp_path / "y").exists()
    leftovers = [p for p in _files(tmp_path) if ".tmp" in p]
    assert leftovers == []
