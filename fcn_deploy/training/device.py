"""Where PyTorch runs: the device a --device name means, and how many CPU threads to use on a shared machine."""

from __future__ import annotations

import os

import torch

from fcn_deploy.core.errors import FcnDeployError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FcnDeployError(f"--device {name}: no CUDA device is visible to PyTorch here; use --device cpu")
    return torch.device(name)


def auto_threads() -> int | None:
    """1 thread when other jobs already keep every core busy: PyTorch's threads then wait on each other at every
    parallel region (measured 4-5x slower than one thread on a loaded 2-core machine). Else PyTorch's default."""
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
