"""The supervisor: receives trapped system calls and answers them, one handler per call.

gVisor-style: a table maps each trapped syscall number to a small handler (`syscalls/files.py`
for the open family, `syscalls/processes.py` for exec and clone). The loop knows no policy.
"""

from __future__ import annotations

import errno
import os
import select
import sys
from collections.abc import Callable

from pylos.runtime.config import EnclaveConfig
from pylos.runtime.policy import FilePolicy
from pylos.runtime.seccomp import Listener, Notification
from pylos.runtime.staging import Stager
from pylos.runtime.syscalls.table import NAMES
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TextIO

Handler = Callable[["Supervisor", Notification], None]


class Log:
    """Gramine's cumulative log levels; to stderr or appended to `loader.log_file`."""

    def __init__(self, config: EnclaveConfig) -> None:
        self.config = config
        self.trace = config.logs("trace")
        self._stream: TextIO = sys.stderr
        if config.log_file:
            try:
                self._stream = open(config.log_file, "a", buffering=1)  # noqa: SIM115
            except OSError as exc:
                print(f"[pylos] error: cannot open loader.log_file '{config.log_file}': "
                      f"{exc.strerror}; logging to stderr", file=sys.stderr)

    def __call__(self, level: str, message: str) -> None:
        if self.config.logs(level):
            print(f"[pylos] {level}: {message}", file=self._stream, flush=True)


class Supervisor:
    def __init__(self, listener: Listener, config: EnclaveConfig, policy: FilePolicy, log: Log,
                 handlers: dict[int, Handler], root_fd: int, stager: Stager | None) -> None:
        self.listener = listener
        self.config = config
        self.policy = policy
        self.log = log
        self.handlers = handlers
        self.root_fd = root_fd  # O_PATH: the view's root, from init after pivot_root
        self.stager = stager  # init binds verified executables into the view for exec
        self.main_pid: int | None = None  # host pid of the program's first process
        self.threads: dict[int, set[int]] = {}  # tgid -> callers of clones let through
        self.warned: set[str] = set()
        self.out_of_memory = False  # an allocation failed for want of sgx.enclave_size
        self.watched: dict[int, Callable[[], None]] = {}  # fd -> what to do once readable

    def watch(self, fd: int, ready: Callable[[], None]) -> None:
        """Call `ready` once `fd` becomes readable (a pidfd: that process has ended)."""
        self.watched[fd] = ready

    def warn_once(self, key: str, level: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.log(level, message)

    def run(self) -> None:
        """Serve notifications until no process of the enclave is left."""
        poller = select.poll()
        poller.register(self.listener.fd, select.POLLIN)
        for fd in self.watched:
            poller.register(fd, select.POLLIN)
        while True:
            events = poller.poll()
            for fd, _ in events:
                if fd in self.watched:
                    poller.unregister(fd)
                    self.watched.pop(fd)()
                    os.close(fd)
            events = [(fd, event) for fd, event in events if fd == self.listener.fd]
            if not events:
                continue
            if any(event & (select.POLLHUP | select.POLLERR) for _, event in events):
                return
            try:
                notification = self.listener.receive()
            except OSError as exc:
                if exc.errno == errno.ENOENT and not self._has_users():
                    return
                if exc.errno in (errno.ENOENT, errno.EINTR):
                    continue  # the caller was interrupted before we got to it
                raise
            if self.main_pid is None:
                self.main_pid = notification.pid
            handler = self.handlers.get(notification.nr)
            if handler is None:  # the filter only traps what has a handler
                self.listener.reply(notification.id, error=errno.ENOSYS)
                continue
            try:
                handler(self, notification)
            except Exception as exc:  # one bad call must not end the enclave
                self.internal_error(notification, exc)

    def internal_error(self, notification: Notification, exc: Exception) -> None:
        """A handler failed: answer the call anyway (ENOSYS, or the errno the failure carried)
        unless it was answered already, say so in one warning line, and go on serving."""
        err = errno.ENOSYS
        if isinstance(exc, OSError) and exc.errno:
            err = exc.errno
        elif isinstance(exc, MemoryError):
            err = errno.ENOMEM
        outcome = f"answered {errno.errorcode.get(err, err)}"
        try:
            if self.listener.id_valid(notification.id):
                self.listener.reply(notification.id, error=err)
            else:
                outcome = "already answered, or the caller is gone"
        except OSError as reply_error:  # the caller is beyond help; the others are not
            outcome = f"could not be answered ({reply_error.strerror})"
        name = NAMES.get(notification.nr, str(notification.nr))
        args = ", ".join(f"{arg:#x}" for arg in notification.args)
        self.log("warning", f"internal error handling {name}({args}) from process "
                 f"{notification.pid}: {exc!r}; {outcome}")

    def _has_users(self) -> bool:
        events = select.poll()
        events.register(self.listener.fd, select.POLLIN)
        return not any(e & select.POLLHUP for _, e in events.poll(0))

    def trace(self, notification: Notification, text: str, result: str) -> None:
        if self.log.trace:
            name = NAMES.get(notification.nr, str(notification.nr))
            self.log("trace", f"[{notification.pid}] {name}({text}) = {result}")
