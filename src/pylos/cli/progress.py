"""Progress of long work (hashing trusted files, encrypting an image): a rich progress bar on
a terminal, shown once the work passes 1 s; elsewhere (CI logs, pipes) one summary line when
it is done: what, how many files, how many bytes, how long."""

from __future__ import annotations

import sys
import time

from pylos.hashing import ProgressCallback

SHOW_AFTER_SECONDS = 1.0


def size_text(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def hashing_progress(total: int, label: str = "hashing trusted files") -> ProgressCallback:
    """A callback `(done, total, nbytes)` for `total` files of work described by `label`."""
    started = time.monotonic()
    state: dict = {"bytes": 0}
    terminal = sys.stderr.isatty()

    def update(done: int, total_: int, nbytes: int) -> None:
        state["bytes"] += nbytes
        if not terminal:
            if done >= total_:
                print(f"[pylos] {label}: {total_} files, {size_text(state['bytes'])} in "
                      f"{time.monotonic() - started:.2f} s", file=sys.stderr)
            return
        bar = state.get("bar")
        if bar is None:
            if time.monotonic() - started < SHOW_AFTER_SECONDS or done >= total_:
                return
            from rich.console import Console
            from rich.progress import Progress

            bar = Progress(console=Console(stderr=True), transient=True)
            bar.start()
            state["bar"], state["task"] = bar, bar.add_task(label, total=total_)
        bar.update(state["task"], completed=done)
        if done >= total_:
            bar.stop()

    return update
