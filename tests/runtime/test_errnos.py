"""Trapped system calls answer what Linux answers, whatever their registers hold.

programs/errnos.c issues raw system calls with bad pointers, high bits in 32-bit arguments,
unknown flag bits, over-long paths and bad open_how sizes, and prints each result. The same
program runs natively (from the enclave's directory, where "app", "trusted.txt" and "data/"
name the same files as inside) and in an enclave; both must agree call for call, and a few
answers are pinned outright. No handler may fail internally: the supervisor keeps serving.
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import time
from pathlib import Path

from pylos.runtime.config import EnclaveConfig
from pylos.runtime.seccomp import Notification
from pylos.runtime.supervisor import Log, Supervisor
from pylos.runtime.syscalls.table import SYSCALLS

FUZZ_CALLS = 2000
FUZZ_SEED = 0x5EED_2024
FUZZ_TIMEOUT = 240

# What Linux answers, pinned so that a change in the program cannot hide behind agreement.
EXPECTED = {
    "open-null": "EFAULT", "open-one": "EFAULT", "open-kernel": "EFAULT",
    "open-minus-one": "EFAULT", "open-unterminated": "EFAULT", "open-5000": "ENAMETOOLONG",
    "open-4096": "ENAMETOOLONG", "open-4095": "OK", "open-empty": "ENOENT",
    "open-high-flags": "OK", "open-unknown-flags": "OK", "open-sign-bit": "OK",
    "open-mode-no-create": "OK", "open-create-high-mode": "OK", "open-path-strips": "OK",
    "open-directory-create": "EINVAL", "open-tmpfile-no-dir": "EINVAL",
    "open-tmpfile-rdonly": "EINVAL",
    "openat-fdcwd-high": "OK", "openat-dirfd-high": "OK", "openat-badfd": "EBADF",
    "openat-badfd-empty": "ENOENT", "openat-badfd-null": "EFAULT",
    "openat-bad-flags-first": "EINVAL", "openat-high-flags": "OK",
    "creat-kernel": "EFAULT", "creat-high-mode": "OK",
    "openat2-size-0": "EINVAL", "openat2-size-23": "EINVAL", "openat2-size-4096": "OK",
    "openat2-size-4097": "E2BIG", "openat2-size-huge-bad-how": "E2BIG",
    "openat2-trailing-nonzero": "E2BIG", "openat2-trailing-guard": "EFAULT",
    "openat2-trailing-nonzero-guard": "E2BIG", "openat2-how-kernel": "EFAULT",
    "openat2-flag-bit-32": "EINVAL", "openat2-flag-bit-63": "EINVAL",
    "openat2-flag-high": "EINVAL", "openat2-flag-bit-30": "EINVAL",
    "openat2-mode-no-create": "EINVAL", "openat2-mode-bit-40": "EINVAL",
    "openat2-resolve-0x40": "EINVAL", "openat2-beneath-in-root": "EINVAL",
    "openat2-path-rdwr": "EINVAL", "openat2-cached-create": "EAGAIN",
    "openat2-bad-flags-first": "EINVAL", "openat2-path-kernel": "EFAULT",
    "openat2-beneath-absolute": "EXDEV", "openat2-in-root-absolute": "OK",
    "openat2-in-root-dotdot": "OK", "openat2-own-fd-no-magiclinks": "ELOOP",
    "execve-null": "EFAULT", "execve-kernel": "EFAULT", "execve-5000": "ENAMETOOLONG",
    "execve-empty": "ENOENT", "execve-argv-kernel": "EFAULT", "execve-argv-element": "EFAULT",
    "execve-envp-element": "EFAULT",
    "execveat-flag-1": "EINVAL", "execveat-flag-sign": "EINVAL",
    "execveat-flag-high-ignored": "ENOENT", "execveat-flag-bad-path-first": "EFAULT",
    "execveat-empty-path-badfd": "EBADF", "execveat-null-empty-path": "EFAULT",
    "execveat-nofollow": "ELOOP", "execveat-follow-argv-bad": "EFAULT",
    "clone-thread-no-sighand": "EINVAL", "clone-sighand-no-vm": "EINVAL",
    "mmap-no-type": "EINVAL", "mmap-huge": "ENOMEM", "mmap-ok": "OK",
}


# Where the enclave knowingly differs: no O_PATH descriptor can be installed in a trapped
# program, and openat2's flags are in memory (a racing thread could change them if the call
# continued), so openat2 with O_PATH answers ENOSYS, which openat2 users take as "use openat"
# (open and openat with O_PATH continue: their flags are registers).
KNOWN = {"openat2-path-nofollow": ("OK", "ENOSYS")}


def _results(lines: list[str]) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in lines)


def _native(root: Path, *args: str, timeout: float = 60) -> list[str]:
    result = subprocess.run([str(root / "app"), *args], cwd=root, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def _inside(enclave, *args: str, timeout: float = 120) -> list[str]:
    result = enclave.run(*args, timeout=timeout)
    assert "internal error" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def _differences(native: list[str], inside: list[str], known: dict | None = None) -> list[str]:
    """Calls answered differently, but for `known` (native, enclave) pairs, keyed by the
    call's name or, for the fuzz loop's "<i> <call>" names, by the call."""
    theirs, ours = _results(native), _results(inside)
    assert theirs.keys() == ours.keys()
    known = KNOWN if known is None else known
    return [f"{name}: native {theirs[name]}, enclave {ours[name]}" for name in theirs
            if theirs[name] != ours[name]
            and known.get(name, known.get(name.split(" ", 1)[-1])) != (theirs[name], ours[name])]


def test_trapped_calls_answer_what_linux_answers(make_enclave):
    # One thread allowed: a clone(CLONE_THREAD) the kernel would refuse as invalid must still
    # say EINVAL, not the thread limit's ENOMEM.
    native = _native(make_enclave("errnos").root, "cases")
    enclave = make_enclave("errnos", log_level="warning")
    text = (enclave.root / "app.manifest.template").read_text()
    enclave.render(log_level="warning",
                   template=text.replace("sgx.max_threads = 8", "sgx.max_threads = 1"))
    inside = _inside(enclave, "cases")
    assert not _differences(native, inside), "\n".join(_differences(native, inside))
    ours = _results(inside)
    wrong = {name: (ours[name], want) for name, want in EXPECTED.items() if ours[name] != want}
    assert not wrong, wrong


def test_random_registers_never_break_the_supervisor(make_enclave):
    args = ("fuzz", str(FUZZ_CALLS), str(FUZZ_SEED))
    native = _native(make_enclave("errnos").root, *args)
    start = time.monotonic()
    inside = _inside(make_enclave("errnos", log_level="warning"), *args, timeout=FUZZ_TIMEOUT)
    assert time.monotonic() - start < FUZZ_TIMEOUT
    # Every call was answered (one line each), then an ordinary open still worked.
    assert len(inside) == FUZZ_CALLS + 1
    assert inside[-1] == f"after {FUZZ_CALLS} calls: trusted content"
    differences = _differences(native[:-1], inside[:-1], {"openat2": ("OK", "ENOSYS")})
    assert not differences, "\n".join(differences[:40])


def test_mocked_calls_ignore_their_registers(make_enclave):
    enclave = make_enclave("errnos", log_level="warning",
                           extra='sys.debug__mock_syscalls = [ { name = "getppid", '
                                 'return = 42 } ]\n')
    assert _inside(enclave, "mocked", "500", str(FUZZ_SEED)) == ["mocked: 500 of 500"]


def test_refused_subprocesses(make_enclave):
    enclave = make_enclave("errnos", log_level="warning",
                           extra="sys.disallow_subprocesses = true\n")
    assert _results(_inside(enclave, "subprocess")) == {
        "fork": "EAGAIN", "vfork": "EAGAIN", "clone-process": "EAGAIN",
        # The kernel refuses CLONE_SIGHAND without CLONE_VM before anything else.
        "clone-process-sighand-no-vm": "EINVAL",
    }


def test_created_files_lose_set_id_bits(make_enclave):
    # As host root, a set-uid file created through an allowed directory would be a set-uid
    # root program on the host: trapped creates drop S_ISUID and S_ISGID, whatever the kind.
    enclave = make_enclave("errnos", log_level="warning")
    assert _inside(enclave, "setid") == [f"{kind} OK" for kind in (
        "open", "openat", "openat2", "creat", "tmpfile")]
    umask = os.umask(0)
    os.umask(umask)
    for kind in ("open", "openat", "openat2", "creat", "tmpfile"):
        mode = (enclave.root / "data" / f"setid-{kind}").stat().st_mode
        assert mode & 0o6000 == 0, (kind, oct(mode))
        assert mode & 0o777 == 0o777 & ~umask, (kind, oct(mode))


class _FakeListener:
    """Notifications from a list; POLLHUP (the enclave is gone) once they are served."""

    def __init__(self, notifications: list[Notification]) -> None:
        self._pending = list(notifications)
        self._read, self._write = os.pipe()
        os.write(self._write, b"x")
        self.fd = self._read
        self.replies: list[tuple[int, int, int]] = []

    def receive(self) -> Notification:
        notification = self._pending.pop(0)
        if not self._pending:
            os.close(self._write)  # POLLHUP once the last one is answered
        return notification

    def id_valid(self, nid: int) -> bool:
        return all(reply[0] != nid for reply in self.replies)

    def reply(self, nid: int, value: int = 0, error: int = 0) -> None:
        self.replies.append((nid, value, error))


def test_internal_errors_answer_and_keep_serving(tmp_path, capsys):
    # A handler that fails inside answers ENOSYS (or the errno it carried), logs one warning
    # line naming the call and its raw arguments, and the next request is served.
    def broken(sup: Supervisor, n: Notification) -> None:
        if n.id == 1:
            raise OverflowError("Python int too large to convert to C int")
        if n.id == 2:
            raise OSError(errno.EMFILE, "too many")
        sup.listener.reply(n.id, value=7)

    openat = SYSCALLS["openat"]
    notes = [Notification(i, 4242, openat, 0, (0xFFFFFF9C, 0xDEAD, 1 << 40, 0, 0, 0))
             for i in (1, 2, 3)]
    listener = _FakeListener(notes)
    config = EnclaveConfig.__new__(EnclaveConfig)
    config.log_level = "warning"
    config.log_file = None
    supervisor = Supervisor(listener, config, None, Log(config), {openat: broken}, -1, None)
    supervisor.run()
    assert listener.replies == [(1, 0, errno.ENOSYS), (2, 0, errno.EMFILE), (3, 7, 0)]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("[pylos] warning: internal error handling openat(0xffffff9c, "
                               "0xdead, 0x10000000000, 0x0, 0x0, 0x0) from process 4242:")
    assert "answered ENOSYS" in lines[0] and "answered EMFILE" in lines[1]
    assert select.select([listener.fd], [], [], 0)[0]
    os.close(listener.fd)
