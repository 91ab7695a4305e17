"""No way out of the view: each test tries one escape and checks the host secret stays unread.

The secret lives next to the enclave directory on the host, outside everything mounted.
"""

from __future__ import annotations

import os

import pytest

from runtime_support import SECRET


def assert_unread(result) -> None:
    assert SECRET not in result.stdout, result.stdout
    assert result.stdout.startswith(("ERR:", "symlink:", "link:", "name_to_handle_at:")), (
        result.stdout + result.stderr)


@pytest.fixture
def enclave(make_enclave):
    return make_enclave("escape")


def test_dotdot(enclave):
    depth = "/.." * 12
    assert_unread(enclave.run("open", depth + str(enclave.secret)))
    assert_unread(enclave.run("dirfd", "/data", "../" * 12 + str(enclave.secret)[1:]))


def test_absolute_symlink_made_inside(enclave):
    assert_unread(enclave.run("symlink", str(enclave.secret), "/data/abs-link"))


def test_relative_symlink_made_inside(enclave):
    rel = "../" * 12 + str(enclave.secret)[1:]
    assert_unread(enclave.run("symlink", rel, "/data/rel-link"))


def test_symlinks_planted_on_the_host(enclave):
    (enclave.root / "data" / "host-abs").symlink_to(enclave.secret)
    (enclave.root / "data" / "host-rel").symlink_to(os.path.relpath(enclave.secret,
                                                                    enclave.root / "data"))
    assert_unread(enclave.run("open", "/data/host-abs"))
    assert_unread(enclave.run("open", "/data/host-rel"))


def test_proc_self_root_and_cwd(enclave):
    assert_unread(enclave.run("open", "/proc/self/root" + str(enclave.secret)))
    assert_unread(enclave.run("open", "/proc/1/root" + str(enclave.secret)))
    assert_unread(enclave.run("open", "/proc/self/cwd/../../../../" + str(enclave.secret)))


def test_proc_fd_of_other_processes(enclave):
    for fd in range(0, 8):
        result = enclave.run("open", f"/proc/1/fd/{fd}")
        assert SECRET not in result.stdout
        assert result.stdout.startswith("ERR:")


def test_opath_then_reopen(enclave):
    result = enclave.run("opath-reopen", "/plain.txt")
    assert result.stdout.startswith("ERR:")
    assert "plain content" not in result.stdout


def test_openat2_in_root(enclave):
    assert_unread(enclave.run("openat2", str(enclave.secret)))
    assert_unread(enclave.run("openat2", "/data/../../../" + str(enclave.secret)))


def test_hard_link_into_allowed_dir(enclave):
    result = enclave.run("link", "/plain.txt", "/data/hard")
    assert "plain content" not in result.stdout
    assert result.stdout.startswith("link:E")


def test_file_handles_are_refused(enclave):
    result = enclave.run("handle", "/data/ok.txt")
    assert "name_to_handle_at:EPERM" in result.stdout
    assert "ERR:" in result.stdout


def test_rename_into_trusted_path(enclave):
    (enclave.root / "data" / "evil").write_text("evil")
    result = enclave.run("rename", "/data/evil", "/trusted.txt")
    assert result.stdout.startswith("rename:E")
    assert (enclave.root / "trusted.txt").read_text() == "trusted content\n"
    unlink = enclave.run("rename", "/trusted.txt", "/data/stolen")
    assert unlink.stdout.startswith("rename:E")
