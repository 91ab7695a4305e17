"""Processes, threads, signals, limits and refused system calls, with real programs."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from pylos.runtime.syscalls.table import SYSCALLS


def test_pipeline_and_a_hundred_children(make_enclave):
    enclave = make_enclave("/bin/sh")
    result = enclave.run("-c", "printf 'b\\na\\nc\\n' | sort | head -2 | wc -l; "
                               "i=0; while [ $i -lt 100 ]; do /bin/true || exit 9; i=$((i+1)); "
                               "done; echo children=$i")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2\nchildren=100\n"


def test_untrusted_executable_is_refused(make_enclave, programs):
    enclave = make_enclave("/bin/sh")
    (enclave.root / "data" / "tool").write_bytes((programs / "hello").read_bytes())
    (enclave.root / "data" / "tool").chmod(0o755)
    result = enclave.run("-c", "/data/tool; echo rc=$?")
    assert "Hello" not in result.stdout
    assert "Disallowing access to file '/data/tool'" in result.stderr


def test_threads_up_to_and_beyond_max_threads(make_enclave):
    enclave = make_enclave("threads", extra="")
    text = (enclave.root / "app.manifest.template").read_text()
    enclave.render(template=text.replace("sgx.max_threads = 8", "sgx.max_threads = 4"))
    within = enclave.run("3")
    assert within.returncode == 0, within.stderr
    assert within.stdout == "started 3 of 3 threads\n"
    beyond = enclave.run("6")
    # clone fails with ENOMEM (as in Gramine); glibc reports EAGAIN from pthread_create
    assert beyond.stdout == "started 3 of 6 threads: Resource temporarily unavailable\n"
    assert ("There are no available TCS pages left for a new thread. Please try to increase "
            "sgx.max_threads in the manifest. The current value is 4") in beyond.stderr


def test_thread_limit_counts_live_threads_not_past_clones(make_enclave):
    """A thread-per-connection server creates and ends threads forever: with at most two
    alive, a limit of 4 must never be reached."""
    enclave = make_enclave("threadchurn", extra="")
    text = (enclave.root / "app.manifest.template").read_text()
    enclave.render(template=text.replace("sgx.max_threads = 8", "sgx.max_threads = 4"))
    result = enclave.run("300")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "started 300 of 300 threads\n"


def test_edmm_lifts_the_thread_cap(make_enclave):
    enclave = make_enclave("threads", extra="sgx.edmm_enable = true\n")
    text = (enclave.root / "app.manifest.template").read_text()
    enclave.render(template=text.replace("sgx.max_threads = 8", "sgx.max_threads = 1"))
    assert enclave.run("12").stdout == "started 12 of 12 threads\n"


def test_sigalrm_every_2ms_completes(make_enclave):
    result = make_enclave("sigalrm").run("/trusted.txt", "2000")
    assert result.returncode == 0, result.stdout + result.stderr
    opens, failures, alarms = map(int, re.findall(r"\d+", result.stdout))
    assert opens == 2000 and failures == 0 and alarms > 0


def test_memory_beyond_enclave_size(make_enclave):
    enclave = make_enclave("memhog", extra='sgx.enclave_size = "64M"\n', log_level="warning")
    result = enclave.run("256")
    assert result.returncode == 1
    got = int(re.search(r"after (\d+) MiB", result.stdout).group(1))
    assert 0 < got < 64
    # Announced at start, named when an allocation fails and when the program dies of it.
    assert "enclave memory limit (sgx.enclave_size): 67108864 bytes" in result.stderr
    assert re.search(r"out of enclave memory: process \d+ asked for \d+ MiB with \d+ MiB in "
                     r"use \(sgx.enclave_size = 64 MiB\)", result.stderr), result.stderr
    assert "the program ran out of enclave memory (sgx.enclave_size = 64 MiB)" in result.stderr
    enough = make_enclave("memhog", extra='sgx.enclave_size = "512M"\n').run("128")
    assert enough.returncode == 0 and "allocated 128 MiB" in enough.stdout
    assert "out of enclave memory" not in enough.stderr


@pytest.mark.parametrize(("name", "expected"), [
    ("ptrace", "EPERM"), ("process_vm_readv", "EPERM"), ("pidfd_getfd", "EPERM"),
    ("kcmp", "EPERM"), ("mount", "EPERM"), ("umount2", "EPERM"), ("pivot_root", "EPERM"),
    ("chroot", "EPERM"), ("unshare", "EPERM"), ("setns", "EPERM"), ("bpf", "EPERM"),
    ("userfaultfd", "EPERM"), ("kexec_load", "EPERM"), ("init_module", "EPERM"),
    ("perf_event_open", "EPERM"), ("keyctl", "EPERM"), ("reboot", "EPERM"), ("iopl", "EPERM"),
    ("ioperm", "EPERM"), ("io_uring_setup", "ENOSYS"), ("io_uring_enter", "ENOSYS"),
    ("clone3", "ENOSYS"), ("open_by_handle_at", "EPERM"), ("name_to_handle_at", "EPERM"),
])
def test_refused_system_calls(make_enclave, name, expected):
    result = make_enclave("syscalls").run(str(SYSCALLS[name]))
    assert result.stdout == f"syscall {SYSCALLS[name]} = -1 errno {expected}\n"


def test_x32_and_unknown_numbers_are_enosys(make_enclave):
    enclave = make_enclave("syscalls")
    assert enclave.run(str(0x40000000 | 39)).stdout.endswith("errno ENOSYS\n")
    assert enclave.run("999").stdout.endswith("errno ENOSYS\n")


def test_disallow_subprocesses(make_enclave):
    enclave = make_enclave("/bin/sh", extra="sys.disallow_subprocesses = true\n",
                           log_level="warning")
    result = enclave.run("-c", "/bin/true; echo after=$?")
    assert "The app tried to create a subprocess, but this is disabled" in result.stderr


def test_mock_syscalls(make_enclave):
    enclave = make_enclave("syscalls", extra='sys.debug__mock_syscalls = [ { name = "getppid", '
                           'return = 42 }, { name = "sched_yield", return = -1 } ]\n')
    assert enclave.run(str(SYSCALLS["getppid"])).stdout == (
        f"syscall {SYSCALLS['getppid']} = 42 errno 0\n")
    assert enclave.run(str(SYSCALLS["sched_yield"])).stdout == (
        f"syscall {SYSCALLS['sched_yield']} = -1 errno EPERM\n")


def test_racing_thread_never_opens_the_forbidden_file(make_enclave):
    enclave = make_enclave("race_open")
    result = enclave.run("/data/ok.txt", "/plain.txt", "plain content", "10000", timeout=300)
    assert result.returncode == 0, result.stderr
    tries, opened, leaks = map(int, re.findall(r"\d+", result.stdout))
    assert tries == 10000 and leaks == 0 and opened > 0


@pytest.mark.parametrize("untrusted", ["/data/evil", "copy:/data/evil:/tmp/evil",
                                       "memfd:/data/evil"])
@pytest.mark.parametrize("view", ["verified", "trapped"])
def test_racing_thread_never_execs_an_untrusted_binary(make_enclave, programs, untrusted, view):
    """A thread flips the exec path between a trusted binary and one the policy forbids (an
    allowed host file, a file the enclave made in /tmp, a memfd): the kernel must never map
    the forbidden one, whatever the timing (verified view: only its binds are executable;
    trapped view: the exec is CONTINUEd after verification of staged copies)."""
    enclave = make_enclave("race_exec")
    shutil.copy(programs / "race_exec", enclave.root / "data" / "evil")
    env = {**os.environ, "PYLOS_VERIFIED_VIEW": "1" if view == "verified" else "0"}
    result = enclave.run("/app", untrusted, "2000", timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    tries, ran, refused, evil = map(int, re.findall(r"\d+", result.stdout))
    assert tries == 2000 and evil == 0 and ran > 0 and ran + refused == tries
