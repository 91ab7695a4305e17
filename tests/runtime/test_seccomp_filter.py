"""The BPF filter, run by a small interpreter of the opcodes it may use (the kernel's meaning of
each), for every system call number: what the enclave's calls meet before the kernel runs them."""

from __future__ import annotations

import errno
import struct

from pylos.runtime import seccomp
from pylos.runtime.syscalls.table import MAX_SYSCALL, SYSCALLS

AUDIT_ARCH_I386 = 0x40000003
DATA = struct.Struct("<iIQ6Q")  # struct seccomp_data
CONDITIONS = {
    seccomp.JEQ_K: lambda a, k: a == k,
    seccomp.JGT_K: lambda a, k: a > k,
    seccomp.JGE_K: lambda a, k: a >= k,
    seccomp.JSET_K: lambda a, k: bool(a & k),
}


def run(program: bytes, nr: int, arch: int = seccomp.AUDIT_ARCH_X86_64,
        args: tuple[int, ...] = (0,) * 6) -> int:
    data = DATA.pack(nr, arch, 0, *args)
    insns = [seccomp.INSN.unpack_from(program, offset)
             for offset in range(0, len(program), seccomp.INSN.size)]
    assert len(insns) <= 4096  # BPF_MAXINSNS
    pc = accumulator = 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == seccomp.RET_K:
            return k
        if code == seccomp.LD_W_ABS:
            accumulator = struct.unpack_from("<I", data, k)[0]
            pc += 1
        else:
            pc += 1 + (jt if CONDITIONS[code](accumulator, k) else jf)


DENIED = {SYSCALLS["ptrace"]: errno.EPERM, SYSCALLS["io_uring_setup"]: errno.ENOSYS}
TRAPPED = {SYSCALLS["openat"], SYSCALLS["execve"]}
CLONE_THREAD, CLONE_NEWUSER = 0x00010000, 0x10000000
TIOCSTI, TIOCGWINSZ = 0x5412, 0x5413
RULES = [
    seccomp.ArgRule(SYSCALLS["clone"], 0, ((CLONE_NEWUSER, seccomp.errno_action(errno.EPERM)),
                                           (CLONE_THREAD, seccomp.RET_USER_NOTIF)),
                    seccomp.RET_ALLOW),
    seccomp.ArgRule(SYSCALLS["ioctl"], 1, ((TIOCSTI, seccomp.errno_action(errno.EPERM)),),
                    seccomp.RET_ALLOW, equals=True),
]
PROGRAM = seccomp.build_filter(
    {**{nr: seccomp.errno_action(err) for nr, err in DENIED.items()},
     **dict.fromkeys(TRAPPED, seccomp.RET_USER_NOTIF)}, RULES)


def test_every_number_gets_its_action():
    for nr in range(MAX_SYSCALL + 1):
        expected = (seccomp.errno_action(DENIED[nr]) if nr in DENIED
                    else seccomp.RET_USER_NOTIF if nr in TRAPPED else seccomp.RET_ALLOW)
        assert run(PROGRAM, nr) == expected, nr


def test_foreign_architectures_x32_and_unknown_numbers():
    enosys = seccomp.errno_action(errno.ENOSYS)
    assert run(PROGRAM, 5, arch=AUDIT_ARCH_I386) == seccomp.RET_KILL_PROCESS
    assert run(PROGRAM, seccomp.X32_SYSCALL_BIT | SYSCALLS["getpid"]) == enosys
    assert run(PROGRAM, -1) == enosys
    assert run(PROGRAM, MAX_SYSCALL + 1) == enosys


def test_argument_rules_read_the_low_word_only():
    clone = SYSCALLS["clone"]
    assert run(PROGRAM, clone, args=(0x11,) + (0,) * 5) == seccomp.RET_ALLOW  # fork: SIGCHLD
    assert run(PROGRAM, clone, args=(CLONE_THREAD | 0x3D0F00,) + (0,) * 5) == (
        seccomp.RET_USER_NOTIF)
    assert run(PROGRAM, clone, args=(CLONE_NEWUSER | CLONE_THREAD,) + (0,) * 5) == (
        seccomp.errno_action(errno.EPERM))
    ioctl = SYSCALLS["ioctl"]
    assert run(PROGRAM, ioctl, args=(0, TIOCSTI, 0, 0, 0, 0)) == seccomp.errno_action(errno.EPERM)
    # The kernel takes the request as 32 bits: garbage above them does not hide it.
    assert run(PROGRAM, ioctl, args=(0, (1 << 32) | TIOCSTI, 0, 0, 0, 0)) == (
        seccomp.errno_action(errno.EPERM))
    # Equality, not bits: TIOCGWINSZ shares every bit of TIOCSTI.
    assert run(PROGRAM, ioctl, args=(0, TIOCGWINSZ, 0, 0, 0, 0)) == seccomp.RET_ALLOW


def test_size_rule_traps_only_large_anonymous_mmaps() -> None:
    mmap = SYSCALLS["mmap"]
    rule = seccomp.SizeRule(mmap, 3, 0x20, 1, 1 << 20, seccomp.RET_USER_NOTIF)
    program = seccomp.build_filter({}, [rule])

    def action(length: int, flags: int) -> int:
        return run(program, mmap, args=(0, length, 3, flags, 2**64 - 1, 0))

    assert action(1 << 20, 0x22) == seccomp.RET_USER_NOTIF
    assert action(5 << 32, 0x22) == seccomp.RET_USER_NOTIF  # only the high word set
    assert action((1 << 20) - 4096, 0x22) == seccomp.RET_ALLOW
    assert action(1 << 30, 0x02) == seccomp.RET_ALLOW  # file mappings are not trapped
    assert run(program, SYSCALLS["munmap"], args=(0, 1 << 30, 0, 0x22, 0, 0)) == seccomp.RET_ALLOW
