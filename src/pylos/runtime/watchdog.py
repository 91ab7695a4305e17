"""The start-up watchdog: every start-up stage has a deadline, so a stall is an error that
names the stage and what it waited for, never a silent hang.

The supervisor arms a real-time timer when a stage begins (its own stages, and those of the
enclave's init, which reports each one over the start channel); the timer's signal raises
`StartupStalled` wherever the supervisor is blocked (a receive, a connect, a wait), and the
launcher then ends the enclave. `PYLOS_START_TIMEOUT` (seconds, default 30) sets the deadline
of each stage.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from pylos.errors import PylosError

DEFAULT_TIMEOUT = 30.0
TIMEOUT_ENV = "PYLOS_START_TIMEOUT"


class StartupStalled(PylosError):
    """A start-up stage did not finish in time (the enclave did not start: exit 1)."""

    exit_code = 1


def start_timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise PylosError(f"{TIMEOUT_ENV}={text!r}: expected a number of seconds above 0")
    return value


class StartupWatchdog:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.stage_name = ""
        self.waiting_for = ""

    def enter(self, name: str, waiting_for: str) -> None:
        """Begin stage `name` (which waits for `waiting_for`) with a fresh deadline."""
        self.stage_name, self.waiting_for = name, waiting_for
        signal.signal(signal.SIGALRM, self._expired)
        signal.setitimer(signal.ITIMER_REAL, self.timeout)

    def disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    @contextmanager
    def stage(self, name: str, waiting_for: str) -> Iterator[None]:
        self.enter(name, waiting_for)
        try:
            yield
        finally:
            self.disarm()

    def _expired(self, _signum: int, _frame: object) -> None:
        self.disarm()
        raise StartupStalled(
            f"the enclave did not start: stage '{self.stage_name}' did not finish within "
            f"{self.timeout:g} s (waiting for {self.waiting_for}); {TIMEOUT_ENV} sets the "
            "deadline")
