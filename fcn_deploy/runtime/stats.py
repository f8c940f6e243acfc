"""Run statistics of the inference pipeline: per-stage milliseconds, end-to-end FPS, latency, drops, reconnects."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fcn_deploy.core.timing import latency_stats

STAGES = ("capture", "pre", "infer", "post", "draw", "write")


@dataclass
class RunStats:
    """Filled by the pipeline threads (append-only lists and counters under one lock), read at the end."""

    stage_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    latency_ms: list[float] = field(default_factory=list)
    frames: int = 0
    dropped: int = 0
    skipped: int = 0
    reconnects: int = 0
    timeouts: int = 0
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    interrupted: bool = False
    streams: int = 1  # frames in flight in the runtime at once (Pipeline's streams)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _recent: list[float] = field(default_factory=list, repr=False)
    _first_done: float | None = field(default=None, repr=False)
    _last_done: float | None = field(default=None, repr=False)

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self.stage_ms[stage].append(ms)

    def frame_done(self, latency_ms: float) -> None:
        now = time.perf_counter()
        with self._lock:
            self.frames += 1
            self.latency_ms.append(latency_ms)
            if self._first_done is None:
                self._first_done = now
            self._last_done = now
            self._recent.append(now)
            if len(self._recent) > 30:
                del self._recent[0]

    def live_fps(self) -> float:
        """FPS over the last (up to) 30 frames, for the on-screen line."""
        with self._lock:
            if len(self._recent) < 2:
                return 0.0
            return (len(self._recent) - 1) / max(self._recent[-1] - self._recent[0], 1e-9)

    def last_latency_ms(self) -> float:
        with self._lock:
            return self.latency_ms[-1] if self.latency_ms else 0.0

    def wall_s(self) -> float:
        end = self.finished if self.finished is not None else time.perf_counter()
        return end - self.started

    def fps(self) -> float:
        return self.frames / self.wall_s() if self.frames else 0.0

    def steady_fps(self) -> float:
        """Frames per second between the first and the last frame written: the rate once the pipeline is full
        (fps() also counts the first frame's trip through every stage and the shutdown)."""
        if self.frames < 2 or self._first_done is None or self._last_done is None:
            return 0.0
        return (self.frames - 1) / max(self._last_done - self._first_done, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        def summary(values: list[float]) -> dict[str, float]:
            if not values:
                return {"mean": 0.0, "p50": 0.0, "p95": 0.0}
            s = latency_stats(values)  # the project's one percentile convention (nearest rank)
            return {"mean": s["mean"], "p50": s["median"], "p95": s["p95"]}

        with self._lock:
            return {
                "frames": self.frames,
                "wall_s": round(self.wall_s(), 4),
                "fps": round(self.fps(), 3),
                "steady_fps": round(self.steady_fps(), 3),
                "stage_ms": {
                    s: {k: round(v, 3) for k, v in summary(self.stage_ms[s]).items()} for s in STAGES
                },
                "latency_ms": {k: round(v, 3) for k, v in summary(self.latency_ms).items()},
                "dropped": self.dropped,
                "skipped": self.skipped,
                "reconnects": self.reconnects,
                "timeouts": self.timeouts,
                "interrupted": self.interrupted,
                "streams": self.streams,
            }

    def summary_line(self) -> str:
        d = self.to_dict()
        stages = "  ".join(f"{s} {d['stage_ms'][s]['mean']:.1f}" for s in STAGES)
        return (
            f"{d['frames']} frames in {d['wall_s']:.2f} s = {d['fps']:.1f} FPS"
            f"{f' ({self.streams} streams)' if self.streams > 1 else ''}  |  ms/frame: {stages}  |  "
            f"latency {d['latency_ms']['mean']:.1f} ms  |  dropped {d['dropped']}  skipped {d['skipped']}  "
            f"reconnects {d['reconnects']}  timeouts {d['timeouts']}"
        )
