"""seccomp user notification, from Python: the BPF filter and the listener's ioctls.

The filter decides on registers only (syscall number, and a flags argument for clone): allow,
fail with an errno, or notify the supervisor. Everything fd-based goes straight to the kernel;
only what the manifest's policy needs is trapped. Layouts and constants: Linux
`include/uapi/linux/seccomp.h`; the structures in docs/formats.md.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Iterable

from pylos.runtime.syscalls.table import MAX_SYSCALL, SYSCALLS
from pylos.typing_compat import NamedTuple

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_ALLOW = 0x7FFF0000

SECCOMP_SET_MODE_FILTER = 1
FILTER_FLAG_NEW_LISTENER = 8
FILTER_FLAG_WAIT_KILLABLE_RECV = 32

IOCTL_RECV = 0xC0502100
IOCTL_SEND = 0xC0182101
IOCTL_ID_VALID = 0x40082102
IOCTL_ADDFD = 0x40182103
IOCTL_SET_FLAGS = 0x40082104
USER_NOTIF_FLAG_CONTINUE = 1
ADDFD_FLAG_SEND = 2
USER_NOTIF_FD_SYNC_WAKE_UP = 1

PR_SET_NO_NEW_PRIVS = 38

# BPF opcodes
LD_W_ABS = 0x20
JEQ_K = 0x15
JGT_K = 0x25
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06
INSN = struct.Struct("<HBBI")

OFF_NR, OFF_ARCH = 0, 4


def off_arg(index: int) -> int:
    """Offset of the low 32 bits of argument `index` in `struct seccomp_data`."""
    return 16 + 8 * index


class ArgRule(NamedTuple):
    """For syscall `nr`: the action of the first (value, action) that matches the low 32 bits
    of `args[arg]`, else `otherwise`. A value matches when any of its bits is set in the
    argument (flags: clone), or, with `equals`, when it is the argument (requests: ioctl).
    An argument equal to `unless` skips the checks (personality's query, all bits set)."""

    nr: int
    arg: int
    checks: tuple[tuple[int, int], ...]
    otherwise: int
    equals: bool = False
    unless: int | None = None

    def block(self) -> list[tuple[int, int, int, int]]:
        block = [(LD_W_ABS, 0, 0, off_arg(self.arg))]
        if self.unless is not None:
            block.append((JEQ_K, 2 * len(self.checks), 0, self.unless))
        test = JEQ_K if self.equals else JSET_K
        for value, action in self.checks:
            block += [(test, 0, 1, value), (RET_K, 0, 0, action)]
        block.append((RET_K, 0, 0, self.otherwise))
        return block


class SizeRule(NamedTuple):
    """For syscall `nr`: `action` when `args[flag_arg]` has a bit of `flags` set and the whole
    64-bit `args[size_arg]` is at least `minimum` (< 2**32); else allow."""

    nr: int
    flag_arg: int
    flags: int
    size_arg: int
    minimum: int
    action: int

    def block(self) -> list[tuple[int, int, int, int]]:
        return [
            (LD_W_ABS, 0, 0, off_arg(self.flag_arg)),
            (JSET_K, 0, 5, self.flags),  # flag clear: allow
            (LD_W_ABS, 0, 0, off_arg(self.size_arg) + 4),
            (JEQ_K, 0, 2, 0),  # high word set: at least 4 GiB
            (LD_W_ABS, 0, 0, off_arg(self.size_arg)),
            (JGE_K, 0, 1, self.minimum),
            (RET_K, 0, 0, self.action),
            (RET_K, 0, 0, RET_ALLOW),
        ]


def errno_action(err: int) -> int:
    return RET_ERRNO | (err & 0xFFFF)


def build_filter(actions: dict[int, int], arg_rules: Iterable[ArgRule | SizeRule] = ()) -> bytes:
    """Assemble the filter: arch check, x32/unknown -> ENOSYS, per-number actions, else allow.

    `actions` maps a syscall number to its return action; numbers with an `ArgRule` decide on
    their arguments. Only the number and (for arg rules) arguments are read, so the
    kernel's per-number cache can skip the filter for every always-allowed call.
    """
    prog: list[tuple[int, int, int, int]] = [
        (LD_W_ABS, 0, 0, OFF_ARCH),
        (JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (RET_K, 0, 0, RET_KILL_PROCESS),
        (LD_W_ABS, 0, 0, OFF_NR),
        (JGE_K, 0, 1, X32_SYSCALL_BIT),
        (RET_K, 0, 0, errno_action(errno.ENOSYS)),
        (JGT_K, 0, 1, MAX_SYSCALL),
        (RET_K, 0, 0, errno_action(errno.ENOSYS)),
    ]
    for rule in arg_rules:
        block = rule.block()
        # Another number skips the block with the accumulator still holding the number.
        prog += [(JEQ_K, 0, len(block), rule.nr), *block]
    for nr, action in sorted(actions.items()):
        prog += [(JEQ_K, 0, 1, nr), (RET_K, 0, 0, action)]
    prog.append((RET_K, 0, 0, RET_ALLOW))
    return b"".join(INSN.pack(*insn) for insn in prog)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def install_filter(program: bytes) -> int:
    """NO_NEW_PRIVS, then install `program` with a listener; returns the listener fd.

    Runs in the child just before exec: after this, its own trapped calls block until the
    supervisor answers, so the listener must be handed over with untrapped calls only.
    """
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    buffer = ctypes.create_string_buffer(program)
    fprog = SockFprog(len(program) // INSN.size, ctypes.addressof(buffer))
    flags = FILTER_FLAG_NEW_LISTENER | FILTER_FLAG_WAIT_KILLABLE_RECV
    fd = _libc.syscall(SYSCALLS["seccomp"], SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "seccomp(SET_MODE_FILTER, NEW_LISTENER)")
    return fd


NOTIF = struct.Struct("<QIIiIQ6Q")
RESP = struct.Struct("<QqiI")
ADDFD = struct.Struct("<QIIII")
ID = struct.Struct("<Q")


class Notification:
    """One trapped system call, as the listener reports it (one per trapped call: no
    dataclass, whose generated code costs start-up time)."""

    __slots__ = ("arch", "args", "id", "nr", "pid")

    def __init__(self, nid: int, pid: int, nr: int, arch: int, args: tuple[int, ...]) -> None:
        self.id, self.pid, self.nr, self.arch, self.args = nid, pid, nr, arch, args

    def __repr__(self) -> str:
        return f"Notification(id={self.id}, pid={self.pid}, nr={self.nr}, args={self.args})"


class Listener:
    """The supervisor's side of the listener fd."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray(NOTIF.size)

    def enable_sync_wake_up(self) -> bool:
        """Same-CPU hand-off (Linux 6.6+); harmless to lack."""
        try:
            fcntl.ioctl(self.fd, IOCTL_SET_FLAGS, USER_NOTIF_FD_SYNC_WAKE_UP)
            return True
        except OSError:
            return False

    def receive(self) -> Notification:
        """Block for the next notification; OSError(ENOENT) once no process is left (6.11+)."""
        buffer = self._buffer
        buffer[:] = bytes(NOTIF.size)
        fcntl.ioctl(self.fd, IOCTL_RECV, buffer, True)
        nid, pid, _flags, nr, arch, _ip, *args = NOTIF.unpack(buffer)
        return Notification(nid, pid, nr, arch, tuple(args))

    def id_valid(self, nid: int) -> bool:
        try:
            fcntl.ioctl(self.fd, IOCTL_ID_VALID, ID.pack(nid))
            return True
        except OSError:
            return False

    def reply(self, nid: int, value: int = 0, error: int = 0) -> None:
        """Answer with a result (value, or -error) without running the call."""
        self._send(RESP.pack(nid, value, -error, 0))

    def allow(self, nid: int) -> None:
        """Let the kernel run the call — only for decisions made on registers alone."""
        self._send(RESP.pack(nid, 0, 0, USER_NOTIF_FLAG_CONTINUE))

    def reply_fd(self, nid: int, fd: int, cloexec: bool) -> None:
        """Install `fd` in the target and answer with its number, atomically (ADDFD|SEND)."""
        request = bytearray(ADDFD.pack(nid, ADDFD_FLAG_SEND, fd, 0,
                                       os.O_CLOEXEC if cloexec else 0))
        try:
            fcntl.ioctl(self.fd, IOCTL_ADDFD, request, True)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return  # the caller is gone (killed, or interrupted by a signal)
            self.reply(nid, error=exc.errno or errno.EMFILE)

    def _send(self, response: bytes) -> None:
        try:
            fcntl.ioctl(self.fd, IOCTL_SEND, response)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # ENOENT: the caller went away meanwhile
                raise
