"""What every source yields and promises: `Frame`s of HxWx3 uint8 RGB, and counters of what it lost.

File sources drop nothing. Live sources (cameras, streams) read on a background thread into a one-frame slot, so
a slow consumer always gets the newest frame; overwritten frames are counted as dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

FALLBACK_FPS = 30.0


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source (live sources: counts every frame read, so gaps show drops)
    image: np.ndarray  # HxWx3 uint8 RGB
    timestamp: float  # seconds: position in a video, wall-clock time for live frames, 0 for images
    name: str  # file stem for images, zero-padded index otherwise (used for output file names)
    captured: float  # time.perf_counter() when the frame was read (for latency)
    capture_ms: float  # time spent reading and decoding it


class Source:
    """Iterable of Frames. `live` sources drop stale frames; file sources drop nothing."""

    live = False
    name = "source"
    fps = FALLBACK_FPS

    def __init__(self) -> None:
        self.dropped = 0
        self.skipped = 0
        self.reconnects = 0
        self.timeouts = 0

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop reading; safe to call from another thread and more than once."""
