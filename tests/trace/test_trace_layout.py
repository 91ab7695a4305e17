"""How traced paths become mounts and trusted entries, on real directory trees made here."""

from __future__ import annotations

from pathlib import Path

from pylos.trace.record import CREATED, READ, Run, decode_runs, encode_runs
from pylos.trace.template import choose_mounts, collapse, merge, plan


def test_symlink_leaving_its_mount_adds_the_target(tmp_path: Path) -> None:
    """`bin/tool -> ../../other/tool` (relative, out of bin's mount) and an absolute link:
    the view must also show where they lead, as /usr/bin/awk -> /etc/alternatives/awk."""
    (tmp_path / "app" / "bin").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "abs").mkdir()
    (tmp_path / "other" / "tool").write_text("x")
    (tmp_path / "abs" / "lib").write_text("y")
    (tmp_path / "app" / "bin" / "tool").symlink_to("../../other/tool")
    (tmp_path / "app" / "bin" / "lib").symlink_to(tmp_path / "abs" / "lib")
    (tmp_path / "app" / "bin" / "local").symlink_to("tool")  # stays inside: nothing more
    needed = {str(tmp_path / "app" / "bin" / name) for name in ("tool", "lib", "local")}
    assert choose_mounts(needed, ()) == sorted(
        str(tmp_path / d) for d in ("abs", "app/bin", "other"))


def test_directory_link_on_the_way(tmp_path: Path) -> None:
    """A directory reached through a link (usrmerge's /lib -> usr/lib) is mounted under the
    name the program used; the file is trusted once, by its real path."""
    real = tmp_path / "usr" / "lib"
    real.mkdir(parents=True)
    (real / "libx.so").write_text("elf")
    (tmp_path / "lib").symlink_to("usr/lib")
    run = Run(argv=["p"], entrypoint="/bin/true", cwd=str(tmp_path / "elsewhere"))
    run.use(str(tmp_path / "lib" / "libx.so"), READ)
    run.use(str(real / "libx.so"), READ)
    layout = plan(merge([run]))
    assert layout.trusted == {str(real / "libx.so")}
    assert layout.mounts == [str(tmp_path / "lib"), str(tmp_path / "usr" / "lib")]


def test_collapse_where_most_files_were_used(tmp_path: Path) -> None:
    pkg = tmp_path / "site" / "pkg"
    (pkg / "sub").mkdir(parents=True)
    names = [pkg / f"m{i}.py" for i in range(3)] + [pkg / "sub" / f"s{i}.py" for i in range(4)]
    (tmp_path / "site" / "big").mkdir()
    for path in [*names, *(tmp_path / "site" / "big" / f"b{i}" for i in range(20))]:
        path.write_text("")
    used = {str(p) for p in names[:2]} | {str(p) for p in names[3:6]}  # 5 of 7
    entries = collapse(used, set(), cwd="/nonexistent")
    assert entries == [(f"{pkg}/", 5, 7)]
    # Not the working directory's tree: the application's own files are listed.
    entries = collapse(used, set(), cwd=str(tmp_path))
    assert [uri for uri, _, _ in entries] == sorted(used)
    # Nor a directory where the program writes.
    entries = collapse(used, {str(pkg / "sub")}, cwd="/nonexistent")
    assert f"{pkg}/" not in [uri for uri, _, _ in entries]


def test_writes_become_allowed_places_or_tmpfs(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "data").mkdir(parents=True)
    (app / "data" / "db").write_text("")
    run = Run(argv=["p"], entrypoint="/bin/true", cwd=str(app))
    run.use(str(app / "data" / "db"), CREATED)             # a new file: its directory
    run.use(str(app / "data" / "made" / "x"), CREATED)     # made and gone: where it was made
    run.use("/tmp/pylos-trace-test-never-there", CREATED)  # outside the app, under /tmp
    run.use("/usr/lib/pylos-never-there/cache", CREATED)   # a system directory
    layout = plan(merge([run]))
    assert layout.allowed_dirs == {str(app / "data")}
    assert layout.tmpfs == {"/tmp"}
    assert layout.refused_writes == {"/usr/lib"}


def test_runs_round_trip_through_the_data_block() -> None:
    run = Run(argv=["a", "-#}", "{{ x }}"], entrypoint="/bin/true", cwd="/")
    run.use("/odd/-#}/#}/name", READ)
    text = "# a template\n" + encode_runs([run, run])
    assert decode_runs(text, "t") == [run, run]


def test_no_host_directory_over_a_tmpfs_write(tmp_path: Path) -> None:
    """A file read next to one the program writes in a tmpfs: mounted alone, so the tmpfs
    stays writable around it."""
    (tmp_path / "old").write_text("")
    written = str(tmp_path / "new")
    assert choose_mounts({str(tmp_path / "old")}, (), {written}) == [str(tmp_path / "old")]
    assert choose_mounts({str(tmp_path)}, (), {written}) == []
