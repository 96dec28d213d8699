"""Timing helpers shared by the benchmark sections: interleaved repetitions, summaries, formatting.

Why interleaved: on a shared machine the load drifts (another process starts, the CPU clocks down). Timing
A five times and then B five times puts the drift between A and B; timing A,B,C,A,B,C,... spreads it over
all of them, so their ratio is what it would be at the same moment. The median ignores the odd slow rep.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping, Sequence


def summarize(times: Sequence[float]) -> dict:
    """Median, min and max of a list of seconds (the raw list kept, for results.json)."""
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "reps": len(times),
            "times": list(times)}


def interleaved(fns: Mapping[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict:
    """Time each zero-argument callable `reps` times, round-robin (A,B,C,A,B,C,...), after `warmup` untimed
    calls of each. Returns name -> `summarize` of its seconds per call."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: summarize(ts) for name, ts in times.items()}


def scale(summary: dict, factor: float) -> dict:
    """A summary of seconds turned into another unit (e.g. x1000 for ms); a rate uses `rate` instead."""
    return {**summary, "median": summary["median"] * factor, "min": summary["min"] * factor,
            "max": summary["max"] * factor, "times": [t * factor for t in summary["times"]]}


def rate(summary: dict, amount: float) -> dict:
    """`amount` per second from a summary of seconds: median amount/median_s, min from the slowest rep."""
    return {"median": amount / summary["median"], "min": amount / summary["max"], "max": amount / summary["min"],
            "reps": summary["reps"]}


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with `digits` significant figures, thousands separated; n/a for None."""
    if x is None:
        return "n/a"
    if x == 0:
        return "0"
    mag = abs(x)
    if mag >= 10 ** digits:
        return f"{x:,.0f}"
    decimals = max(0, digits - 1 - int(f"{mag:e}".split("e")[1]))
    return f"{x:,.{decimals}f}"


def fmt_range(s: dict | None, digits: int = 3) -> str:
    """'median (min–max)' of a summary."""
    if s is None:
        return "n/a"
    return f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table (cells as given, str() of anything else)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
