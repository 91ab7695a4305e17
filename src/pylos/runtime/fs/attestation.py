"""`/dev/attestation`: Gramine's attestation pseudo-files (docs/formats.md).

Served through FUSE with direct I/O, so every read and write reaches the supervisor from the
calling thread, whose ID the kernel puts in each request: the state (`user_report_data`,
`target_info`) is per process, as in Gramine, where each process is its own enclave. A fresh
process (fork or exec) starts from zeros, like a new Gramine process.

In development mode (unsigned manifest: no measurement) only `keys/` exists. `quote` exists
only with `sgx.remote_attestation = "dcap"`. Everything is *simulated*: reports are MACed with
the simulated platform's report key and quotes chain to the pylos simulation root.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from pylos.runtime.fs.fuse import FOPEN_DIRECT_IO, Attr, Context, Driver
from pylos.runtime.keys import KEY_SIZE, SEALING_KEYS, KeyStore
from pylos.typing_compat import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pylos.sgx.structs import ReportBody

REPORT_DATA_SIZE = 64
TARGET_INFO_SIZE = 512
REPORT_SIZE = 432
QUOTE_SIZE_HINT = 8192
DIR_MODE = stat.S_IFDIR | 0o555
READ_ONLY = stat.S_IFREG | 0o444
READ_WRITE = stat.S_IFREG | 0o666


class ProcessState:
    """What one process has written to /dev/attestation, and what it is reading."""

    def __init__(self) -> None:
        self.user_report_data = bytearray(REPORT_DATA_SIZE)
        self.target_info = bytearray(TARGET_INFO_SIZE)
        self.generated: dict[str, bytes] = {}  # report/quote being read


class Handle(NamedTuple):
    path: str


class AttestationFs(Driver):
    attr_timeout = 0.0  # contents and the key list change: always ask

    def __init__(self, keys: KeyStore, report_body: bytes | None, attestation_type: str,
                 log: Callable[[str, str], None], uid: int, gid: int,
                 platform: object | None = None) -> None:
        """`report_body`: the enclave's identity, packed (None: development mode)."""
        self.keys = keys
        self.report_body = report_body
        self._identity: ReportBody | None = None
        self.attestation_type = attestation_type
        self.log = log
        self.uid, self.gid = uid, gid
        self.platform = platform
        self.root_fd: int | None = None  # the view's root: its /proc maps thread -> process
        self.states: dict[tuple[int, int], ProcessState] = {}
        self.handles: dict[int, Handle] = {}
        self.next_handle = 1
        files = {"keys": DIR_MODE}
        if report_body is not None:
            files.update(attestation_type=READ_ONLY, user_report_data=READ_WRITE,
                         target_info=READ_WRITE, my_target_info=READ_ONLY, report=READ_ONLY)
            if attestation_type == "dcap":
                files["quote"] = READ_ONLY
        self.files = files

    @property
    def identity(self) -> ReportBody:
        """The enclave's identity, unpacked when a report is first asked for: importing the
        SGX structures costs ~15 ms, and most enclaves never ask."""
        if self._identity is None:
            from pylos.sgx.structs import ReportBody

            assert self.report_body is not None
            self._identity = ReportBody.unpack(self.report_body)
        return self._identity

    # --- per process ----------------------------------------------------------------------

    def _read_proc(self, path: str) -> bytes | None:
        assert self.root_fd is not None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.root_fd)
        except OSError:
            return None
        try:
            return os.read(fd, 4096)
        finally:
            os.close(fd)

    def _process(self, tid: int) -> tuple[int, int]:
        """The process of thread `tid` (IDs as the enclave's /proc shows them), with its start
        time: a reused process ID must not inherit a dead process's report data."""
        if self.root_fd is None or tid <= 0:
            return tid, 0
        status = self._read_proc(f"proc/{tid}/status") or b""
        tgid = next((int(line.split()[1]) for line in status.split(b"\n")
                     if line.startswith(b"Tgid:")), tid)
        stat_line = self._read_proc(f"proc/{tgid}/stat") or b""
        fields = stat_line.rpartition(b")")[2].split()
        return tgid, int(fields[19]) if len(fields) > 19 else 0

    def _state(self, tid: int) -> ProcessState:
        process = self._process(tid)
        state = self.states.get(process)
        if state is None:
            state = self.states[process] = ProcessState()
        return state

    # --- names ----------------------------------------------------------------------------

    def _key_name(self, path: str) -> str | None:
        if path.startswith("keys/"):
            name = path[len("keys/"):]
            if name and "/" not in name:
                return name
        return None

    def getattr(self, ctx: Context, path: str, fh: int | None) -> Attr:
        if path == "":
            return Attr(DIR_MODE, nlink=2, uid=self.uid, gid=self.gid)
        name = self._key_name(path)
        if name is not None:
            if name not in self.keys.names():
                raise OSError(errno.ENOENT, path)
            mode = READ_ONLY if name in SEALING_KEYS else READ_WRITE
            size = KEY_SIZE if self.keys.get(name) is not None else 0
            return Attr(mode, size, uid=self.uid, gid=self.gid)
        mode = self.files.get(path)
        if mode is None:
            raise OSError(errno.ENOENT, path)
        size = {"attestation_type": len(self.attestation_type),
                "user_report_data": REPORT_DATA_SIZE, "target_info": TARGET_INFO_SIZE,
                "my_target_info": TARGET_INFO_SIZE, "report": REPORT_SIZE,
                "quote": QUOTE_SIZE_HINT}.get(path, 0)
        return Attr(mode, size, nlink=2 if mode == DIR_MODE else 1, uid=self.uid, gid=self.gid)

    def listdir(self, ctx: Context, path: str) -> list[tuple[str, int]]:
        if path == "":
            return list(self.files.items())
        if path == "keys":
            return [(name, READ_ONLY if name in SEALING_KEYS else READ_WRITE)
                    for name in self.keys.names()]
        raise OSError(errno.ENOTDIR, path)

    # --- files ----------------------------------------------------------------------------

    def open(self, ctx: Context, path: str, flags: int) -> tuple[int, int]:
        attr = self.getattr(ctx, path, None)
        if stat.S_ISDIR(attr.mode):
            raise OSError(errno.EISDIR, path)
        handle = self.next_handle
        self.next_handle += 1
        self.handles[handle] = Handle(path)
        return handle, FOPEN_DIRECT_IO

    def create(self, ctx: Context, path: str, flags: int, mode: int) -> tuple[int, int]:
        name = self._key_name(path)
        if name is None or name in SEALING_KEYS or name in (".", ".."):
            raise OSError(errno.EACCES, path)
        self.keys.declare(name)  # a key file appears; it holds no key until 16 bytes arrive
        return self.open(ctx, path, flags)

    def release(self, ctx: Context, fh: int) -> None:
        self.handles.pop(fh, None)

    def setattr(self, ctx: Context, path: str, fh: int | None, *, size: int | None,
                mode: int | None, times: tuple[int | None, int | None] | None = None) -> None:
        if mode is not None:
            raise OSError(errno.EPERM, path)
        # O_TRUNC on open: the next write replaces the content anyway.

    def read(self, ctx: Context, fh: int, offset: int, size: int) -> bytes:
        handle = self._handle(fh)
        content = self._content(ctx, handle, offset)
        return content[offset:offset + size]

    def _content(self, ctx: Context, handle: Handle, offset: int) -> bytes:
        path = handle.path
        name = self._key_name(path)
        if name is not None:
            return self.keys.get(name) or b""
        if path == "attestation_type":
            return self.attestation_type.encode()
        state = self._state(ctx.pid)
        if path == "user_report_data":
            return bytes(state.user_report_data)
        if path == "target_info":
            return bytes(state.target_info)
        if path == "my_target_info":
            from pylos.sgx.structs import TargetInfo

            return TargetInfo.of(self.identity).pack()
        if path in ("report", "quote"):
            # Generated when reading starts; later chunks of the same read come from it.
            if offset == 0 or path not in state.generated:
                state.generated[path] = self._generate(path, state)
            return state.generated[path]
        raise OSError(errno.EINVAL, path)

    def _generate(self, what: str, state: ProcessState) -> bytes:
        from pylos.attest.platform import SimulatedPlatform

        if self.platform is None:
            self.platform = SimulatedPlatform()
        try:
            if what == "report":
                from pylos.attest.report import make_report

                return make_report(self.platform, self.identity, bytes(state.target_info),
                                   bytes(state.user_report_data))
            from pylos.attest.quote import make_quote

            return make_quote(self.platform, self.identity, bytes(state.user_report_data))
        except ImportError:
            self.log("error", f"/dev/attestation/{what}: this pylos has no simulated {what} "
                     "generation")
            raise OSError(errno.ENOSYS, what) from None
        except ValueError as exc:
            self.log("error", f"/dev/attestation/{what}: {exc}")
            raise OSError(errno.EINVAL, str(exc)) from None

    def write(self, ctx: Context, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh)
        path = handle.path
        name = self._key_name(path)
        if name is not None:
            if name in SEALING_KEYS:
                raise OSError(errno.EACCES, path)
            if offset != 0 or len(data) != KEY_SIZE:
                self.log("error", f"/dev/attestation/keys/{name}: a key is exactly {KEY_SIZE} "
                         f"bytes written at once (got {len(data)} at offset {offset}); not set")
                raise OSError(errno.EACCES, path)  # Gramine's answer
            self.keys.set(name, data)
            self.log("debug", f"key '{name}' provisioned through /dev/attestation/keys")
            return len(data)
        if path not in ("user_report_data", "target_info"):
            raise OSError(errno.EACCES, path)
        state = self._state(ctx.pid)
        buffer = state.user_report_data if path == "user_report_data" else state.target_info
        if offset >= len(buffer):
            raise OSError(errno.ENOSPC, path)
        if offset == 0:  # a new value: what is not written reads as zeros
            buffer[:] = bytes(len(buffer))
        kept = data[:len(buffer) - offset]  # longer writes are truncated (Gramine)
        buffer[offset:offset + len(kept)] = kept
        return len(data)

    def _handle(self, fh: int) -> Handle:
        try:
            return self.handles[fh]
        except KeyError:
            raise OSError(errno.EBADF, "unknown handle") from None
