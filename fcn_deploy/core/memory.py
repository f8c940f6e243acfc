"""Check a large allocation against the memory this machine has before making it (a one-line error, not a
MemoryError or an allocator abort)."""

from __future__ import annotations

import os

from fcn_deploy.core.errors import FcnDeployError


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages; None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(nbytes: float, what: str, fix: str) -> None:
    """Refuse `what` when it needs more than the available memory: '<what> needs about X GB ...; <fix>'."""
    avail = available_bytes()
    if avail is not None and nbytes > avail:
        raise FcnDeployError(
            f"{what} needs about {nbytes / 1e9:.1f} GB of memory, more than the {avail / 1e9:.1f} GB available; {fix}"
        )
