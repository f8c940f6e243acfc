"""File sources: image files (a folder, a glob, one file) and video files. They drop nothing.

Stills are decoded by the project's one decoder (`fcn_deploy.core.images`: EXIF orientation applied, the same
array training and calibration see); videos by OpenCV, converted from BGR at this boundary.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.images import read_image
from fcn_deploy.runtime.opencv import bgr_to_rgb, import_cv2
from fcn_deploy.runtime.sources.base import FALLBACK_FPS, Frame, Source

log = logging.getLogger(__name__)


class VideoFileSource(Source):
    def __init__(self, path: str | Path) -> None:
        super().__init__()
        cv2 = import_cv2()
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
        cv2 = import_cv2()
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
        index = 0
        seen: set[str] = set()
        for path in self.paths:
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            try:
                rgb = read_image(path)
            except FcnDeployError as e:
                self.skipped += 1
                self.skipped_names.append(str(path))
                log.warning("skipping %s: not a readable image (%s)", path, e)
                continue
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
