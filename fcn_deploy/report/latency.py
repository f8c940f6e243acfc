"""The report's latency: every row of one size timed in interleaved rounds, so they all see the same machine.

Timing one backend after another lets load on a shared machine favour whichever row ran in a quiet moment (single
runs swung a ratio from x0.28 to x20.8 here). So every backend is warmed up first, then `latency_rounds` rounds
each time every backend in turn (A B C, A B C, ...) for its share of the budget; a row's figures are the one
set of statistics (fcn_deploy.core.timing, trtexec's percentiles) over all its timed runs, spread over the whole
measurement. Each run is the wall time of one `Backend.run(batch)`, as in `fcn-deploy profile`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Mapping

import numpy as np

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.timing import latency_stats
from fcn_deploy.report.inputs import ReportConfig

WARMUP_RUNS = 2  # untimed runs of each backend, whatever latency_warmup_s says (first-run allocations)
MIN_RUNS = 10  # timed runs of each backend in all, as `profile` takes at least (trtexec's --iterations default)


def method(cfg: ReportConfig) -> str:
    """How the rows were timed, for the report's metadata."""
    budget = f"{cfg.latency_iterations} runs" if cfg.latency_iterations else f"{cfg.latency_duration_s:g} s"
    return (f"wall time of Backend.run on the first image: {budget} per row in {cfg.latency_rounds} interleaved "
            f"rounds over every row of a size, after {WARMUP_RUNS} warm-up runs each and "
            f"{cfg.latency_warmup_s:g} s of warm-up in all")  # fmt: skip


def interleaved(timed: Mapping[Hashable, tuple[Backend, np.ndarray]],
                cfg: ReportConfig) -> dict[Hashable, dict[str, float] | str]:  # fmt: skip
    """key -> latency statistics (ms) of that backend on its batch, or the error that stopped it."""
    errors: dict[Hashable, str] = {}

    def run(key: Hashable) -> float | None:
        if key in errors:
            return None
        backend, batch = timed[key]
        t = time.perf_counter()
        try:
            backend.run(batch)
        except FcnDeployError as e:
            errors[key] = str(e)
            return None
        return (time.perf_counter() - t) * 1e3

    started = time.perf_counter()
    warm = 0
    while warm < WARMUP_RUNS or time.perf_counter() - started < cfg.latency_warmup_s:
        for key in timed:
            run(key)
        warm += 1
    rounds = max(1, cfg.latency_rounds)
    per_round = math.ceil((cfg.latency_iterations or MIN_RUNS) / rounds)  # runs of each backend per round, at least
    share_s = 0.0 if cfg.latency_iterations else cfg.latency_duration_s / rounds  # seconds of each per round
    times: dict[Hashable, list[float]] = {key: [] for key in timed}
    for _ in range(rounds):
        for key in timed:
            t0, n = time.perf_counter(), 0
            while n < per_round or time.perf_counter() - t0 < share_s:
                ms = run(key)
                if ms is None:
                    break
                times[key].append(ms)
                n += 1
    return {key: errors[key] if key in errors else latency_stats(times[key]) for key in timed}
