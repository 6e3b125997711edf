"""Small measurement helpers: summaries with spread, ratios, percentiles, process RSS and CPU time."""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: Sequence[float], digits: int = 6) -> dict[str, Any]:
    """Median with its spread (min, max, interquartile range) and the raw values, for results.json."""
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None, "p25": None, "p75": None, "values": []}
    return {
        "n": len(values),
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "p25": round(percentile(values, 25), digits),
        "p75": round(percentile(values, 75), digits),
        "values": [round(v, digits) for v in values],
    }


def spread_pct(s: dict[str, Any]) -> float | None:
    """(max - min) / median in percent: how noisy the repetitions were."""
    if not s.get("n") or not s.get("median"):
        return None
    spread: float = 100.0 * (s["max"] - s["min"]) / s["median"]
    return round(spread, 1)


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-repetition ratios of paired measurements (same repetition, same conditions)."""
    return [n / d for n, d in zip(numerators, denominators, strict=True) if d]


def time_per_call(fn: Callable[[], object], min_seconds: float = 0.05, max_loops: int = 1_000_000) -> float:
    """Seconds per call of `fn`: loops doubled until one batch runs at least `min_seconds`."""
    loops = 1
    while True:
        start = perf_counter()
        for _ in range(loops):
            fn()
        elapsed = perf_counter() - start
        if elapsed >= min_seconds or loops >= max_loops:
            return elapsed / loops
        loops = min(max_loops, loops * 2 if elapsed <= 0 else max(loops * 2, int(loops * min_seconds / elapsed) + 1))


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def subprocess_env() -> dict[str, str]:
    """Environment for bench subprocesses: the repo root importable, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def python() -> str:
    """The interpreter running the bench (the venv's)."""
    return sys.executable
