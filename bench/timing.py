"""Timing helpers shared by the benchmarks: alternating A/B runs, medians, ratio tables."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Series:
    name: str
    samples: list[float] = field(default_factory=list)  # seconds, or what the table measures

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def summary(self, baseline: Series | None = None) -> str:
        ratio = f"{self.median / baseline.median:6.2f}x" if baseline else "   1.00x"
        return (f"{self.name:<40} median {self.median * 1000:9.1f} ms   "
                f"min-max {min(self.samples) * 1000:.1f}-{max(self.samples) * 1000:.1f} ms   "
                f"{ratio}")


def time_command(argv: Sequence[str], setup: Callable[[], None] | None = None, **kwargs) -> float:
    """Wall time of one run of `argv` (output discarded); `setup` runs untimed before it."""
    if setup is not None:
        setup()
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - start


def alternate(runs: dict[str, Callable[[], float]], repetitions: int) -> list[Series]:
    """Run every contender once per round, in turn, so drift hits all of them alike."""
    series = {name: Series(name) for name in runs}
    for _ in range(repetitions):
        for name, run in runs.items():
            series[name].samples.append(run())
    return list(series.values())


def print_table(title: str, series: list[Series]) -> None:
    print(f"\n{title}")
    baseline = series[0]
    for s in series:
        print("  " + s.summary(None if s is baseline else baseline))
