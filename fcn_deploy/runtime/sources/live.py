"""Live sources (cameras, RTSP/HTTP streams): latest frame, open/read time-outs, reconnect with back-off.

A reader thread per connection publishes into a one-frame slot, so a slow consumer always gets the newest frame;
overwritten frames are counted as dropped. A live source never yields a substitute frame: a failed or timed-out
read marks the stream down, and it reconnects with exponential back-off until `max_reconnects` consecutive
attempts have failed, then raises `SourceUnavailableError`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.runtime.opencv import bgr_to_rgb, import_cv2
from fcn_deploy.runtime.sources.base import FALLBACK_FPS, Frame, Source

log = logging.getLogger(__name__)


class SourceUnavailableError(FcnDeployError):
    """A live source stayed down through every reconnect attempt."""

    exit_code = 2


class FrameReader(Protocol):
    """One connection to a live source. `read` returns an RGB frame, or None when the stream failed or ended."""

    def open(self) -> None: ...  # raises (any exception) when the connection fails

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


class CaptureReader:
    """cv2.VideoCapture on a camera index, a GStreamer pipeline or a URL, with FFmpeg open/read time-outs."""

    def __init__(
        self, target: int | str, api: int | None = None, open_timeout_s: float = 5, read_timeout_s: float = 2
    ):
        self.target, self.api = target, api
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self._cap = None

    def open(self) -> None:
        cv2 = import_cv2()
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000),
        ]  # fmt: skip
        api = self.api if self.api is not None else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.target, api, params)
        if not cap.isOpened():
            cap.release()
            raise ConnectionError("VideoCapture did not open")
        self._cap = cap

    @property
    def fps(self) -> float:
        cv2 = import_cv2()
        return float(self._cap.get(cv2.CAP_PROP_FPS)) if self._cap is not None else 0.0

    def read(self) -> np.ndarray | None:
        ok, bgr = self._cap.read()
        return bgr_to_rgb(bgr) if ok and bgr is not None else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class LiveSource(Source):
    """Latest-frame reader with open/read time-outs, reconnect with back-off and bounded give-up.

    A reader thread per connection publishes frames into a one-frame slot. The consuming iterator supervises:
    no new frame within `read_timeout_s` (a hung read) or a failed read marks the connection dead; it is
    abandoned (a read that never returns cannot be interrupted; its thread closes the reader if it ever wakes)
    and reopened after 0.5, 1, 2, ... s (capped at `backoff_cap_s`). `max_reconnects` consecutive attempts
    without a frame raise SourceUnavailableError. The first connection fails fast instead (exit 1).
    """

    live = True

    def __init__(
        self,
        make_reader: Callable[[], FrameReader],
        name: str,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 2.0,
        max_reconnects: int = 5,
        backoff_s: float = 0.5,
        backoff_cap_s: float = 10.0,
        fps: float | None = None,
    ) -> None:
        super().__init__()
        self.make_reader, self.name = make_reader, name
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self.max_reconnects, self.backoff_s, self.backoff_cap_s = max_reconnects, backoff_s, backoff_cap_s
        self._fps_hint = fps
        if fps:
            self.fps = fps
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._generation = 0
        self._latest: Frame | None = None
        self._failed = False
        self._last_progress = 0.0
        self._read_count = 0
        self.failed_reads = 0

    # reader thread of one connection
    def _read_loop(self, generation: int, reader: FrameReader) -> None:
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    rgb = reader.read()
                except Exception as e:  # a driver error on a live stream is a dropped connection, not a crash
                    log.debug("%s: read raised %s", self.name, e)
                    rgb = None
                t1 = time.perf_counter()
                with self._cond:
                    if generation != self._generation:
                        return  # abandoned after a time-out; a newer connection owns the slot
                    if rgb is None:
                        self._failed = True
                        self.failed_reads += 1
                        self._cond.notify_all()
                        return
                    if self._latest is not None:
                        self.dropped += 1  # the consumer never took the previous frame
                    self._latest = Frame(self._read_count, rgb, time.time(), f"{self._read_count:06d}", t1,
                                         (t1 - t0) * 1000)  # fmt: skip
                    self._read_count += 1
                    self._last_progress = t1
                    self._cond.notify_all()
        finally:
            reader.close()

    def _open(self) -> FrameReader | None:
        """Open a reader within open_timeout_s. A reader that opens too late is closed (by whichever side sees
        the other's flag; close() is idempotent), never used."""
        box: dict[str, object] = {}
        done = threading.Event()
        abandoned = threading.Event()

        def target() -> None:
            reader = self.make_reader()
            try:
                reader.open()
                box["reader"] = reader
            except Exception as e:  # any driver/network failure is a failed attempt
                box["error"] = e
            finally:
                done.set()
            if abandoned.is_set() and "reader" in box:
                reader.close()

        threading.Thread(target=target, name=f"open {self.name}", daemon=True).start()
        if not done.wait(self.open_timeout_s):
            abandoned.set()
            if done.is_set() and "reader" in box:
                box["reader"].close()  # type: ignore[attr-defined]
            self.timeouts += 1
            log.warning("%s: no connection within %.1f s", self.name, self.open_timeout_s)
            return None
        if "error" in box:
            log.debug("%s: open failed: %s", self.name, box["error"])
            return None
        return box["reader"]  # type: ignore[return-value]

    def _start(self, reader: FrameReader) -> None:
        with self._cond:
            self._generation += 1
            self._failed = False
            self._latest = None
            self._last_progress = time.perf_counter()
            generation = self._generation
        if self._fps_hint is None:
            fps = getattr(reader, "fps", 0.0) or 0.0
            if fps <= 0 or math.isnan(fps) or fps > 1000:
                log.info(
                    "%s: the source reports no frame rate; using %g FPS for outputs", self.name, FALLBACK_FPS
                )
                fps = FALLBACK_FPS
            self._fps_hint = fps
            self.fps = fps
        threading.Thread(target=self._read_loop, args=(generation, reader), name=f"read {self.name}",
                         daemon=True).start()  # fmt: skip

    def _next_frame(self) -> Frame | None:
        """The newest unconsumed frame; None when the connection is dead (failed read or time-out)."""
        with self._cond:
            while not self._stop.is_set():
                if self._latest is not None:
                    frame, self._latest = self._latest, None
                    return frame
                if self._failed:
                    return None
                remaining = self._last_progress + self.read_timeout_s - time.perf_counter()
                if remaining <= 0:
                    self.timeouts += 1
                    log.warning("%s: no frame for %.1f s (read time-out)", self.name, self.read_timeout_s)
                    self._generation += 1  # abandon the hung reader thread
                    return None
                self._cond.wait(min(remaining, 0.1))
        return None

    def _reconnect(self) -> None:
        for attempt in range(self.max_reconnects):
            delay = min(self.backoff_cap_s, self.backoff_s * 2**attempt)
            log.warning("%s: stream down; reconnecting in %.1f s (attempt %d/%d)", self.name, delay, attempt + 1,
                        self.max_reconnects)  # fmt: skip
            if self._stop.wait(delay):
                return
            reader = self._open()
            if reader is None:
                continue
            self.reconnects += 1
            self._start(reader)
            if self._peek_alive():
                return
        raise SourceUnavailableError(
            f"{self.name}: camera unavailable: no frames after {self.max_reconnects} reconnect attempts; "
            "check the cable/URL, or raise --max-reconnects / --read-timeout"
        )

    def _peek_alive(self) -> bool:
        """After a reconnect: wait for the first frame (left in the slot) or a failure/time-out."""
        with self._cond:
            while not self._stop.is_set():
                if self._latest is not None:
                    return True
                if self._failed:
                    return False
                remaining = self._last_progress + self.read_timeout_s - time.perf_counter()
                if remaining <= 0:
                    self.timeouts += 1
                    self._generation += 1
                    return False
                self._cond.wait(min(remaining, 0.1))
        return True

    def __iter__(self) -> Iterator[Frame]:
        reader = self._open()
        if reader is None:
            raise FcnDeployError(
                f"could not open {self.name}; check that it exists and is not in use (or raise --open-timeout)"
            )
        self._start(reader)
        if not self._peek_alive() and not self._stop.is_set():
            self.close()
            raise FcnDeployError(
                f"{self.name}: opened but delivered no frame within {self.read_timeout_s:g} s"
            )
        while not self._stop.is_set():
            frame = self._next_frame()
            if frame is not None:
                yield frame
            elif not self._stop.is_set():
                self._reconnect()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._generation += 1  # reader threads exit (and release their device) after their current read
            self._cond.notify_all()
