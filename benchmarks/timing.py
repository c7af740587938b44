"""Side-by-side timing on a shared machine: interleaved rounds, CPU and wall clocks, ratios.

The benchmarks run their conditions back to back in rounds, the order rotated every round,
so each condition sees the same machine load. Wall-clock time on a machine shared with other
jobs mostly measures the other jobs, so each block is also timed in CPU time of this process
(``time.thread_time`` with one torch thread: exactly the work done, whoever else runs;
``time.process_time`` with several, which also counts OpenMP threads spinning while a peer
is descheduled). A ratio is median / median; its spread is the quartiles of the per-round
ratios.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator

#: ``{condition: {"cpu": [seconds per round], "wall": [...]}}``
Times = dict[str, dict[str, list[float]]]


def rotated(names: list[str], r: int) -> list[str]:
    """``names`` starting at position ``r`` (each condition runs first in turn)."""
    k = r % len(names)
    return names[k:] + names[:k]


def new_times(names: list[str]) -> Times:
    return {name: {"cpu": [], "wall": []} for name in names}


class Clock:
    """CPU time of this process's work (thread time with one thread) and wall time."""

    def __init__(self, threads: int) -> None:
        self.cpu_clock = time.thread_time if threads == 1 else time.process_time

    @contextlib.contextmanager
    def measure(self, into: dict[str, list[float]]) -> Iterator[None]:
        """Append the block's CPU seconds to ``into["cpu"]`` and wall seconds to ``into["wall"]``."""
        c0, w0 = self.cpu_clock(), time.perf_counter()
        yield
        into["cpu"].append(self.cpu_clock() - c0)
        into["wall"].append(time.perf_counter() - w0)


def median(times: Times, name: str, kind: str = "cpu") -> float:
    return statistics.median(times[name][kind])


def ratio(times: Times, name: str, base: str, kind: str = "cpu") -> tuple[float, float, float]:
    """``(median(name) / median(base), q1, q3)``, q1/q3 the quartiles of per-round ratios."""
    x, b = times[name][kind], times[base][kind]
    per_round = [a / c for a, c in zip(x, b, strict=True)]
    q1, _, q3 = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else per_round * 3
    return statistics.median(x) / statistics.median(b), q1, q3


def format_ratio(times: Times, name: str, base: str) -> str:
    """``1.004 (per-round IQR 0.991-1.012; wall 1.020)``: CPU-time ratio, then wall's."""
    r, q1, q3 = ratio(times, name, base)
    wall = ratio(times, name, base, "wall")[0]
    return f"{r:.3f} (per-round IQR {q1:.3f}-{q3:.3f}; wall {wall:.3f})"
