"""A progress bar for long hashing runs: shown on a terminal, only once hashing passes 1 s."""

from __future__ import annotations

import sys
import time

from pylos.hashing import ProgressCallback

SHOW_AFTER_SECONDS = 1.0


def hashing_progress(total: int) -> ProgressCallback | None:
    """A callback for `hash_files` that draws a rich progress bar on stderr when it helps."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()
    state: dict = {}

    def update(done: int, total_: int) -> None:
        bar = state.get("bar")
        if bar is None:
            if time.monotonic() - started < SHOW_AFTER_SECONDS or done >= total_:
                return
            from rich.console import Console
            from rich.progress import Progress

            bar = Progress(console=Console(stderr=True), transient=True)
            bar.start()
            state["bar"], state["task"] = bar, bar.add_task("hashing trusted files", total=total_)
        bar.update(state["task"], completed=done)
        if done >= total_:
            bar.stop()

    return update
