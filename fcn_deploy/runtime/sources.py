"""Frame sources: cameras (V4L2 index, CSI via GStreamer), RTSP/HTTP streams, video files, images, folders, globs.

Every source yields `Frame`s holding HxWx3 uint8 RGB (BGR from OpenCV is converted here, at the boundary).

File sources drop nothing. Live sources (cameras, streams) read on a background thread into a one-frame slot, so
a slow consumer always gets the newest frame; overwritten frames are counted as dropped. A live source never
yields a substitute frame: a failed or timed-out read marks the stream down, and it reconnects with exponential
back-off until `max_reconnects` consecutive attempts have failed, then raises `SourceUnavailableError`.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.preprocess import to_rgb

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
FALLBACK_FPS = 30.0
CSI_PIPELINE = (
    "nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
    "framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
    "appsink drop=true max-buffers=1 sync=false"
)


class SourceUnavailableError(FcnDeployError):
    """A live source stayed down through every reconnect attempt."""

    exit_code = 2


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source (live sources: counts every frame read, so gaps show drops)
    image: np.ndarray  # HxWx3 uint8 RGB
    timestamp: float  # seconds: position in a video, wall-clock time for live frames, 0 for images
    name: str  # file stem for images, zero-padded index otherwise (used for output file names)
    captured: float  # time.perf_counter() when the frame was read (for latency)
    capture_ms: float  # time spent reading and decoding it


def _cv2():
    # OpenCV and FFmpeg print warnings for every failed open; our own one-line errors replace them.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    return cv2


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV image (gray, BGR, BGRA; 8 or 16 bit) -> HxWx3 uint8 RGB."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] >= 3:
        image = image[:, :, 2::-1]
    return to_rgb(image)


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


# --- files ------------------------------------------------------------------------------------------------


class VideoFileSource(Source):
    def __init__(self, path: str | Path) -> None:
        super().__init__()
        cv2 = _cv2()
        self.path = Path(path)
        self.name = str(self.path)
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise FcnDeployError(
                f"{self.path}: cannot open as a video (corrupt, truncated or unknown format)"
            )
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        if not fps or math.isnan(fps) or fps <= 0:
            log.warning("%s: no frame rate in the file; assuming %g FPS for outputs", self.path, FALLBACK_FPS)
            fps = FALLBACK_FPS
        self.fps = float(fps)
        self.expected = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._stop = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        cv2 = _cv2()
        index = 0
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                ok, bgr = self._cap.read()
                if not ok or bgr is None:
                    break
                pos = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                rgb = bgr_to_rgb(bgr)
                t1 = time.perf_counter()
                yield Frame(index, rgb, pos, f"{index:06d}", t1, (t1 - t0) * 1000)
                index += 1
        finally:
            self._cap.release()
        if index == 0 and not self._stop.is_set():
            raise FcnDeployError(f"{self.path}: no frame could be decoded (corrupt or truncated video)")
        if not self._stop.is_set() and self.expected and index < self.expected - 1:
            # read() cannot tell EOF from a decode failure; a short count is the only sign of a damaged file.
            log.warning(
                "%s: decoded %d of %d frames; the file may be truncated", self.path, index, self.expected
            )

    def close(self) -> None:
        self._stop.set()


class ImageFilesSource(Source):
    """A list of image files. Unreadable ones are skipped, counted and named in a warning; never replaced."""

    def __init__(self, paths: list[Path], name: str) -> None:
        super().__init__()
        self.paths = paths
        self.name = name
        self.skipped_names: list[str] = []
        self._stop = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        cv2 = _cv2()
        index = 0
        seen: set[str] = set()
        for path in self.paths:
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            data = np.fromfile(str(path), np.uint8) if path.is_file() else np.zeros(0, np.uint8)
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
            if image is None:
                self.skipped += 1
                self.skipped_names.append(str(path))
                log.warning("skipping %s: not a readable image (%d bytes)", path, data.size)
                continue
            rgb = bgr_to_rgb(image)
            t1 = time.perf_counter()
            name = path.stem if path.stem not in seen else f"{path.stem}_{index:06d}"
            seen.add(name)
            yield Frame(index, rgb, 0.0, name, t1, (t1 - t0) * 1000)
            index += 1
        if self.skipped:
            log.warning(
                "skipped %d unreadable image(s): %s",
                self.skipped,
                ", ".join(Path(p).name for p in self.skipped_names),
            )
        if index == 0:
            raise FcnDeployError(f"{self.name}: none of the {len(self.paths)} image file(s) could be read")

    def close(self) -> None:
        self._stop.set()


# --- live sources -----------------------------------------------------------------------------------------


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
        cv2 = _cv2()
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
        cv2 = _cv2()
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


# --- opening a source from the command line ------------------------------------------------------------------


def _has_gstreamer() -> bool:
    cv2 = _cv2()
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


def camera_source(spec: str, **live_kw: float) -> LiveSource:
    """'0' -> V4L2/default camera 0; 'csi://0' -> Jetson CSI sensor 0 through nvarguscamerasrc."""
    cv2 = _cv2()
    open_t, read_t = live_kw.get("open_timeout_s", 5.0), live_kw.get("read_timeout_s", 2.0)
    if spec.startswith("csi://"):
        sensor = spec[len("csi://") :]
        if not sensor.isdigit():
            raise FcnDeployError(f"--camera {spec!r}: expected csi://N with a sensor number, e.g. csi://0")
        if not _has_gstreamer():
            raise MissingDependencyError(
                f"--camera {spec}: CSI cameras need OpenCV built with GStreamer (JetPack's OpenCV has it; "
                "opencv-python from pip does not); or use a V4L2 camera index such as --camera 0"
            )
        pipeline = CSI_PIPELINE.format(sensor=int(sensor), width=1280, height=720, fps=30)
        return LiveSource(lambda: CaptureReader(pipeline, cv2.CAP_GSTREAMER, open_t, read_t), f"CSI camera {sensor}",
                          **live_kw)  # fmt: skip
    if not spec.isdigit():
        raise FcnDeployError(f"--camera {spec!r}: expected a camera index such as 0, or csi://0")
    index = int(spec)
    api = (
        cv2.CAP_V4L2
        if os.name == "posix" and Path("/dev").is_dir() and os.uname().sysname == "Linux"
        else None
    )
    return LiveSource(lambda: CaptureReader(index, api, open_t, read_t), f"camera {index}", **live_kw)


def open_source(spec: str, **live_kw: float) -> Source:
    """A URL, video file, image, folder or glob pattern."""
    if spec.lower().startswith(URL_SCHEMES):
        open_t, read_t = live_kw.get("open_timeout_s", 5.0), live_kw.get("read_timeout_s", 2.0)
        cv2 = _cv2()
        return LiveSource(
            lambda: CaptureReader(spec, cv2.CAP_FFMPEG, open_t, read_t), f"stream {spec}", **live_kw
        )
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FcnDeployError(
                f"{path}: folder has no images ({', '.join(IMAGE_SUFFIXES)}); check the path"
            )
        return ImageFilesSource(files, str(path))
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFilesSource([path], str(path))
        return VideoFileSource(path)
    if any(c in spec for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise FcnDeployError(
                f"{spec}: the pattern matches no files; check the pattern (quote it in the shell)"
            )
        return ImageFilesSource(files, spec)
    raise FcnDeployError(f"{spec}: no such file or folder; give a video, image, folder, glob or rtsp:// URL")
