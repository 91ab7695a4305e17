"""copy-bom: Occlum's bom semantics, ELF autodep, incremental copies, and bad boms that must
stop before the image is touched."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from pylos.errors import PylosError
from pylos.workspace.bom import apply_plan, plan_bom

from support import run_pylos


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry of the tree with its type, content/target and mtime."""
    state: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            state[str(path)] = ("link", os.readlink(path))
        elif path.is_dir():
            state[str(path)] = ("dir",)
        else:
            state[str(path)] = ("file", path.read_bytes(), st.st_mtime_ns)
    return state


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A project dir (the parent of --root) with files, a tree with links, and an image."""
    write(tmp_path / "a.txt", "A")
    write(tmp_path / "tree" / "x.txt", "X")
    write(tmp_path / "tree" / "sub" / "y.txt", "Y")
    write(tmp_path / "tree" / ".git" / "config", "git")
    (tmp_path / "tree" / "inner-link").symlink_to("sub/y.txt")
    (tmp_path / "tree" / "outer-link").symlink_to(tmp_path / "a.txt")
    (tmp_path / "image").mkdir()
    return tmp_path


def copy_bom(project: Path, bom_text: str, *extra: str, name: str = "bom.yaml"
             ) -> subprocess.CompletedProcess:
    write(project / name, bom_text)
    return run_pylos("copy-bom", "-f", name, "--root", "image", *extra, cwd=project)


def test_files_dirs_links_and_renames(src: Path):
    digest = hashlib.sha256(b"A").hexdigest().upper()
    result = copy_bom(src, f"""
includes: [base.yaml]
excludes: [.git]
targets:
  - target: /opt/app
    mkdirs: [data, logs/old]
    createlinks:
      - src: ../a.txt
        linkname: a-link
    copy:
      - files:
          - a.txt
          - name: a.txt
            hash: {digest}
            autodep: false
            rename: a.copy
      - dirs: [tree]
  - target: /flat
    copy:
      - dirs: [tree/]
  - target: /whole
    copy:
      - from: tree
""")
    assert result.returncode == 0, result.stderr
    image = src / "image"
    for name in ("bin", "lib64", "root", "tmp", "ext2"):
        assert (image / name).is_dir()
    assert (image / "opt/app/data").is_dir() and (image / "opt/app/logs/old").is_dir()
    assert os.readlink(image / "opt/app/a-link") == "../a.txt"
    assert (image / "opt/app/a.txt").read_text() == "A"
    assert (image / "opt/app/a.copy").read_text() == "A"
    assert (image / "opt/app/tree/sub/y.txt").read_text() == "Y"
    assert (image / "flat/x.txt").read_text() == "X"  # `dir/` copies the contents
    assert (image / "whole/sub/y.txt").read_text() == "Y"
    # A link inside the copied tree is kept; one leaving it is replaced by its target.
    assert os.readlink(image / "opt/app/tree/inner-link") == "sub/y.txt"
    outer = image / "opt/app/tree/outer-link"
    assert not outer.is_symlink() and outer.read_text() == "A"
    assert not (image / "opt/app/tree/.git").exists()


def test_incremental_and_dry_run(src: Path):
    bom = "targets:\n  - target: /\n    copy:\n      - files: [a.txt]\n      - dirs: [tree]\n"
    first = copy_bom(src, bom)
    assert "5 files copied" in first.stderr, first.stderr
    before = snapshot(src / "image")
    second = copy_bom(src, bom)
    assert "0 files copied" in second.stderr
    assert snapshot(src / "image") == before
    write(src / "a.txt", "A2")
    dry = copy_bom(src, bom, "--dry-run")
    assert dry.returncode == 0
    assert f"copy      {src / 'a.txt'} -> /a.txt" in dry.stdout
    assert "2 files to copy" in dry.stdout  # a.txt and tree/outer-link (its copy)
    assert snapshot(src / "image") == before  # a dry run changes nothing
    third = copy_bom(src, bom)
    assert "2 files copied" in third.stderr
    assert (src / "image/a.txt").read_text() == "A2"


def test_autodep_copies_loader_and_libraries(src: Path, wsprog: Path):
    (src / "prog").write_bytes(wsprog.read_bytes())
    result = copy_bom(src, "targets:\n  - target: /bin\n    copy:\n      - files: [prog]\n")
    assert result.returncode == 0, result.stderr
    image = src / "image"
    assert (image / "lib64/ld-linux-x86-64.so.2").is_file()
    libc = [p for p in image.rglob("libc.so.6")]
    assert libc and libc[0].read_bytes() == Path(os.path.realpath(
        "/" + str(libc[0].relative_to(image)))).read_bytes()
    nodep = copy_bom(src, "targets:\n  - target: /b2\n    copy:\n      - files:\n"
                     "        - {name: prog, autodep: false}\n", name="nodep.yaml")
    assert nodep.returncode == 0


def test_rpath_origin_dependency(src: Path):
    """A library found through DT_RUNPATH with $ORIGIN is copied to its host path."""
    (src / "dep" / "lib").mkdir(parents=True)
    (src / "dep" / "bin").mkdir()
    write(src / "dep" / "lib.c", "int answer(void) { return 42; }\n")
    write(src / "dep" / "main.c", "int answer(void);\nint main(void) { return answer(); }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", src / "dep/lib/libanswer.so",
                    src / "dep/lib.c"], check=True)
    subprocess.run(["cc", "-o", src / "dep/bin/main", src / "dep/main.c",
                    f"-L{src / 'dep/lib'}", "-lanswer", "-Wl,-rpath,$ORIGIN/../lib"],
                   check=True)
    plan = plan_bom(write(src / "r.yaml", "targets:\n  - target: /bin\n    copy:\n"
                          "      - files: [dep/bin/main]\n"), src / "image", [])
    copies = {op.source: op.dest for op in plan.ops.values() if op.kind == "copy"}
    lib = str(src / "dep" / "lib" / "libanswer.so")
    assert copies[lib] == lib


def expect_error(src: Path, bom_text: str, message: str, *extra: str) -> None:
    before = snapshot(src / "image")
    result = copy_bom(src, bom_text, *extra)
    assert result.returncode == 1, result.stdout + result.stderr  # the bom is rejected
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(src / "image") == before


def test_missing_file_leaves_image_untouched(src: Path):
    expect_error(src, "targets:\n  - target: /bin\n    mkdirs: [new]\n    copy:\n"
                 "      - files: [a.txt, nope.txt]\n",
                 "bom.yaml: targets[0].copy[0].files[1]: source")


def test_hash_mismatch_leaves_image_untouched(src: Path):
    wrong = "0" * 64
    expect_error(src, f"targets:\n  - target: /\n    copy:\n      - files:\n"
                 f"        - {{name: a.txt, hash: '{wrong}'}}\n", "hash mismatch for")
    lower = hashlib.sha256(b"A").hexdigest()  # Occlum compares upper-case hex exactly
    expect_error(src, f"targets:\n  - target: /\n    copy:\n      - files:\n"
                 f"        - {{name: a.txt, hash: '{lower}'}}\n", "64 upper-case hex digits")


def test_include_cycle(src: Path):
    write(src / "one.yaml", "includes: [two.yaml]\n")
    write(src / "two.yaml", "includes: [bom.yaml]\n")
    expect_error(src, "includes: [one.yaml]\ntargets:\n  - target: /x\n",
                 "bom include cycle: bom.yaml -> one.yaml -> two.yaml -> bom.yaml")


def test_missing_include(src: Path):
    expect_error(src, "includes: [nothere.yaml]\n", "included bom 'nothere.yaml' not found")


def test_unknown_keys(src: Path):
    expect_error(src, "targetz: []\n", "bom.yaml.targetz: unknown key")
    expect_error(src, "targets:\n  - target: /\n    copy:\n      - fils: [a.txt]\n",
                 "targets[0].copy[0].fils: unknown key")
    expect_error(src, "targets:\n  - target: /\n    copy:\n      - files:\n"
                 "        - {name: a.txt, autodeps: false}\n", "files[0].autodeps: unknown key")


def test_targets_outside_the_root(src: Path):
    expect_error(src, "targets:\n  - target: /../../etc\n", "leaves the image root")
    expect_error(src, "targets:\n  - target: /bin\n    mkdirs: [../../x]\n",
                 "leaves the image root")
    expect_error(src, "targets:\n  - target: /\n    createlinks:\n"
                 "      - {src: /etc/passwd, linkname: ../../passwd}\n", "leaves the image root")
    expect_error(src, "targets:\n  - target: /\n    copy:\n      - files:\n"
                 "        - {name: a.txt, rename: ../a.txt}\n", "rename: expected a file name")


def test_image_symlinks_resolve_inside_the_image(src: Path, tmp_path: Path):
    """A link in the image is followed as the enclave sees it, never onto the host: an
    absolute target starts at the image root, `..` stops there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    image = src / "image"
    (image / "usr" / "lib").mkdir(parents=True)
    (image / "lib").symlink_to("usr/lib")
    (image / "escape").symlink_to(outside)
    (image / "up").symlink_to("../../..")
    result = copy_bom(src, "targets:\n  - target: /lib/sub\n    copy:\n      - files: [a.txt]\n"
                      "  - target: /escape\n    copy:\n      - files: [a.txt]\n"
                      "  - target: /up/tmp\n    copy:\n      - files: [a.txt]\n")
    assert result.returncode == 0, result.stderr
    assert (image / "usr/lib/sub/a.txt").read_text() == "A"
    assert (image / str(outside).lstrip("/") / "a.txt").read_text() == "A"
    assert (image / "tmp/a.txt").read_text() == "A"
    assert list(outside.iterdir()) == []
    assert os.readlink(image / "lib") == "usr/lib"
    (image / "loop").symlink_to("loop")
    expect_error(src, "targets:\n  - target: /loop/x\n", "too many levels of symbolic links")


def test_occlum_glibc_paths_map_to_the_host(src: Path):
    plan = plan_bom(write(src / "g.yaml", "targets:\n  - target: /opt/occlum/glibc/lib\n"
                          "    copy:\n      - files:\n"
                          "        - /opt/occlum/glibc/lib/libc.so.6\n"), src / "image", [])
    op = plan.ops["/opt/occlum/glibc/lib/libc.so.6"]
    assert op.source is not None and Path(op.source).name == "libc.so.6"
    with pytest.raises(PylosError, match="Occlum's own glibc"):
        plan_bom(write(src / "h.yaml", "targets:\n  - target: /\n    copy:\n      - files:\n"
                       "        - /opt/occlum/glibc/lib/libnot-a-lib.so\n"), src / "image", [])


def test_apply_plan_library_api(src: Path):
    plan = plan_bom(write(src / "p.yaml", "targets:\n  - target: /d\n    copy:\n"
                          "      - files: [a.txt]\n"), src / "image", [])
    assert apply_plan(plan) == 1
    assert (src / "image/d/a.txt").read_text() == "A"


def test_environment_variables(src: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BOM_DIR", "tree")
    result = copy_bom(src, "targets:\n  - target: /${BOM_DIR}-copy\n    copy:\n"
                      "      - from: $BOM_DIR\n        files: [x.txt]\n")
    assert result.returncode == 0, result.stderr
    assert (src / "image/tree-copy/x.txt").read_text() == "X"
    expect_error(src, "targets:\n  - target: /\n    copy:\n      - files: [$NOT_SET_ANYWHERE]\n",
                 "environment variable $NOT_SET_ANYWHERE")


def test_conflicting_destinations_fail_in_the_plan(src: Path):
    """What applying would trip over (a traceback once) is refused while planning."""
    expect_error(src, "targets:\n  - target: /bin\n    copy:\n      - files:\n"
                 "        - {name: a.txt, rename: ..}\n", "rename: expected a file name")
    expect_error(src, "targets:\n  - target: /\n    copy:\n      - files: [a.txt]\n"
                 "  - target: /a.txt/sub\n",
                 "'/a.txt/sub' would be inside '/a.txt', a file")
    expect_error(src, "targets:\n  - target: /etc\n    mkdirs: [conf]\n  - target: /\n"
                 "    createlinks:\n      - {src: /tmp, linkname: etc}\n",
                 "cannot put a link at '/etc': the bom puts files inside it")
    write(src / "image" / "plain", "a file in the image")
    expect_error(src, "targets:\n  - target: /plain/sub\n",
                 "'/plain/sub' would be inside '/plain', which is a file in the image")


def test_names_the_kernel_refuses_fail_in_the_plan(src: Path):
    expect_error(src, 'targets:\n  - target: /\n    mkdirs: ["a\\0b"]\n', "contains a NUL byte")
    expect_error(src, f"targets:\n  - target: /\n    mkdirs: [{'x' * 256}]\n",
                 "path too long (256 bytes, longest component 256")
    expect_error(src, "targets: !!timestamp soon\n", "invalid YAML for a bom: a value does not "
                 "fit its type")
    (src / "bad.yaml").write_bytes(b"targets:\n  - target: /\xff\n")
    result = run_pylos("copy-bom", "-f", "bad.yaml", "--root", "image", cwd=src)
    assert result.returncode == 1 and "invalid YAML: not UTF-8 text (byte 22 is 0xff)" in (
        result.stderr), result.stderr
