"""Where PyTorch runs: the device a --device name means, and how many CPU threads to use on a shared machine."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from fcn_deploy.core.environment import usable_cores
from fcn_deploy.core.errors import FcnDeployError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FcnDeployError(f"--device {name}: no CUDA device is visible to PyTorch here; use --device cpu")
    return torch.device(name)


_MEASURED: list[int] = []  # the thread count this process measured or was given (set_measured_threads)


def set_measured_threads(threads: int) -> None:
    """Make `threads` this process's choice: auto_threads() returns it from now on (the demo measures once)."""
    _MEASURED[:] = [threads]


def auto_threads() -> int | None:
    """The thread count this process measured (set_measured_threads), else 1 thread when other jobs already keep
    every core busy: PyTorch's threads then wait on each other at every parallel region (measured 4-5x slower than
    one thread on a loaded 2-core machine). Else PyTorch's default."""
    if _MEASURED:
        return _MEASURED[0]
    cores = os.cpu_count() or 1
    return 1 if os.getloadavg()[0] >= cores else None


def apply_threads(threads: int | None) -> None:
    """Set PyTorch's intra-op threads to `threads`, or to auto_threads() when None."""
    threads = threads if threads is not None else auto_threads()
    if threads is None:
        return
    if threads < 1:
        raise FcnDeployError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def measure_threads(work: Callable[[], object], candidates: Sequence[int] | None = None,
                    rounds: int = 3) -> tuple[int, dict[int, float]]:  # fmt: skip
    """Time `work` (a few training steps) under each thread count, interleaved `rounds` times so that a change of
    load hits every candidate alike; the count with the lowest median wins (ties: fewer threads). Returns the
    winner and each candidate's median seconds. PyTorch's thread count is left at the winner."""
    counts = sorted(set(candidates or (1, usable_cores())))
    if counts[0] < 1:
        raise FcnDeployError(f"--threads must be >= 1, got {counts[0]}")
    times: dict[int, list[float]] = {n: [] for n in counts}
    for n in counts:  # warm-up: the first run under a thread count pays for the pool and the allocator
        torch.set_num_threads(n)
        work()
    for _ in range(rounds):
        for n in counts:
            torch.set_num_threads(n)
            t = time.perf_counter()
            work()
            times[n].append(time.perf_counter() - t)
    medians = {n: statistics.median(v) for n, v in times.items()}
    best = min(counts, key=lambda n: (medians[n], n))
    torch.set_num_threads(best)
    return best, medians
