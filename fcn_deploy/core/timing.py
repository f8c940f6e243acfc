"""Latency statistics, computed one way for every timer in the project (profile, the inference pipeline, benchmarks).

Percentiles are trtexec's nearest rank: the reported p99 is a latency that was actually measured, and a
`fcn-deploy profile` line reads the same as the trtexec line for the same engine (np.percentile's default
interpolates between two samples, which for 20 runs invents a p95 that no run took). The median is the usual
one (the mean of the two middle samples for an even count), as trtexec reports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

STAT_KEYS = ("min", "max", "mean", "median", "p90", "p95", "p99", "std", "cv_pct")


def percentile(sorted_ms: Sequence[float], pct: float) -> float:
    """trtexec's percentile: the value below which `pct` percent of the (sorted) samples fall, nearest rank."""
    n = len(sorted_ms)
    exclude = int((100.0 - pct) * n / 100.0 + 1e-9)  # (1 - 0.9) * 100 is 9.99... in binary floating point
    return float(sorted_ms[max(n - 1 - exclude, 0)])


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """min / max / mean / median / p90 / p95 / p99 / std and the coefficient of variation in percent."""
    if not len(samples_ms):
        raise ValueError("latency_stats of no samples")
    a = np.sort(np.asarray(samples_ms, np.float64))
    mean = float(a.mean())
    std = float(a.std())
    return {
        "min": float(a[0]),
        "max": float(a[-1]),
        "mean": mean,
        "median": float(np.median(a)),
        "p90": percentile(a, 90),
        "p95": percentile(a, 95),
        "p99": percentile(a, 99),
        "std": std,
        "cv_pct": 100.0 * std / mean if mean > 0 else 0.0,
    }


def time_calls(fn: Callable[[], Any], runs: int, warmup: int = 1) -> list[float]:
    """Milliseconds of `runs` back-to-back calls of `fn`, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out
