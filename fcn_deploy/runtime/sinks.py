"""Where rendered frames go: a window, a video file, a folder of images, raw label PNGs.

Files appear only complete: images via fcn_deploy.core.atomic; a video is written to a temp file beside the target
and moved into place by `close()`, which the pipeline calls on every exit path, Ctrl-C included, so an
interrupted run leaves a playable video of the frames processed so far.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fcn_deploy.core.atomic import publish, reserve_temp, write_bytes
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.runtime.opencv import import_cv2, rgb_to_bgr
from fcn_deploy.runtime.sources.base import Frame

log = logging.getLogger(__name__)

VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
IMAGE_OUTPUTS = (".png", ".jpg", ".jpeg", ".bmp")


def _writable_dir(path: Path, what: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise FcnDeployError(
            f"{path}: cannot write {what} here ({e.strerror}); choose a writable path"
        ) from None
    return path


class Sink:
    def write(self, frame: Frame, image: np.ndarray, labels: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finalise; called exactly once on every exit path."""


class VideoSink(Sink):
    """fps may be a callable, read at the first frame: a live source knows its rate only once connected."""

    def __init__(self, path: str | Path, fps: float | Callable[[], float]) -> None:
        self.path = Path(path)
        codec = VIDEO_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise FcnDeployError(f"{self.path}: unknown video type; use .mp4, .avi, .mkv or .mov")
        if self.path.is_dir():
            raise FcnDeployError(f"{self.path}: is a folder; give a video file name such as out.mp4")
        _writable_dir(self.path.parent if str(self.path.parent) else Path("."), "the video")
        self.codec, self.fps = codec, fps
        # Keep the suffix: OpenCV picks the container from it.
        fd, self.tmp = reserve_temp(self.path, suffix=f".tmp{self.path.suffix}")
        os.close(fd)
        self._writer = None
        self.frames = 0

    def write(self, frame: Frame, image: np.ndarray, labels: np.ndarray) -> None:
        cv2 = import_cv2()
        h, w = image.shape[:2]
        if self._writer is None:
            self.size = (w, h)
            fps = float(self.fps() if callable(self.fps) else self.fps)
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.codec), fps, (w, h))
            if not self._writer.isOpened():
                raise FcnDeployError(
                    f"{self.path}: OpenCV cannot open a {self.codec} video writer here (disk full, folder not "
                    "writable, or codec missing); free space or try an .avi output"
                )
        if (w, h) != self.size:  # frames of a folder differ in size; a video has one
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(rgb_to_bgr(image))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.frames == 0:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
            return
        problem = self._check_written()
        if problem:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
            raise FcnDeployError(
                f"{self.path}: the video could not be completed ({problem}); nothing was written there; "
                "check free disk space and that the folder is writable"
            )
        publish(self.tmp, self.path)
        log.info("wrote %s (%d frames)", self.path, self.frames)

    def _check_written(self) -> str | None:
        """OpenCV's VideoWriter reports no write errors (a full disk gives a file without index): read the temp
        file back and require every frame written. Returns what is wrong, or None."""
        try:
            size = self.tmp.stat().st_size
        except OSError as e:
            return f"temp file {self.tmp.name}: {e.strerror}"
        if size == 0:
            return f"OpenCV wrote 0 bytes for {self.frames} frames"
        cv2 = import_cv2()
        cap = cv2.VideoCapture(str(self.tmp))
        try:
            if not cap.isOpened():
                return f"{size} bytes written but the file does not open as video (unfinalised)"
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if n < self.frames:
                return f"OpenCV wrote {max(n, 0)} of {self.frames} frames"
            ok, _ = cap.read()
            if not ok:
                return "the file holds no readable frame"
            if self.frames == 1:  # the frame just read; seeking back to frame 0 of a 1-frame mp4 fails
                return None
            cap.set(cv2.CAP_PROP_POS_FRAMES, self.frames - 1)  # a truncated file has the count but not the frame
            ok, _ = cap.read()
            if not ok:
                return f"frame {self.frames} of {self.frames} cannot be read back (truncated)"
        finally:
            cap.release()
        return None


class ImageFolderSink(Sink):
    """One image per frame, named after the frame (file stem for image sources)."""

    def __init__(self, folder: str | Path, suffix: str = ".png") -> None:
        self.folder = _writable_dir(Path(folder), "images")
        self.suffix = suffix

    def write(self, frame: Frame, image: np.ndarray, labels: np.ndarray) -> None:
        cv2 = import_cv2()
        ok, data = cv2.imencode(self.suffix, rgb_to_bgr(image))
        if not ok:
            raise FcnDeployError(f"{self.folder}: cannot encode {self.suffix} images")
        write_bytes(self.folder / f"{frame.name}{self.suffix}", data.tobytes())


class ImageFileSink(Sink):
    """A single output image (for a single-image source)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        _writable_dir(self.path.parent if str(self.path.parent) else Path("."), "the image")
        self.written = False

    def write(self, frame: Frame, image: np.ndarray, labels: np.ndarray) -> None:
        if self.written:
            raise FcnDeployError(
                f"{self.path}: one output image for several frames; give a folder or a video"
            )
        cv2 = import_cv2()
        ok, data = cv2.imencode(self.path.suffix, rgb_to_bgr(image))
        if not ok:
            raise FcnDeployError(f"{self.path}: cannot encode this image type; use .png or .jpg")
        write_bytes(self.path, data.tobytes())
        self.written = True


class LabelSink(Sink):
    """Raw class indices as PNG (8-bit up to 256 classes, else 16-bit), at the frame's resolution."""

    def __init__(self, folder: str | Path, num_classes: int) -> None:
        self.folder = _writable_dir(Path(folder), "label images")
        self.dtype = np.uint8 if num_classes <= 256 else np.uint16

    def write(self, frame: Frame, image: np.ndarray, labels: np.ndarray) -> None:
        cv2 = import_cv2()
        ok, data = cv2.imencode(".png", np.ascontiguousarray(labels.astype(self.dtype)))
        if not ok:
            raise FcnDeployError(f"{self.folder}: cannot encode label PNGs")
        write_bytes(self.folder / f"{frame.name}.png", data.tobytes())


def display_available() -> bool:
    """OpenCV built with a GUI backend and (on Linux) a display server to show it on."""
    cv2 = import_cv2()
    gui = next((ln for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith("GUI:")), "")
    if not gui or "NONE" in gui.upper():
        return False
    if os.name == "posix" and os.uname().sysname == "Linux":
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class DisplaySink(Sink):
    """An OpenCV window; `q` or Esc in it stops the run (sets `quit_requested`)."""

    def __init__(self, title: str = "fcn-deploy") -> None:
        if not display_available():
            raise FcnDeployError(
                "--display: no display here (OpenCV without GUI, or DISPLAY unset); use --headless with --output"
            )
        self.title = title
        self.quit_requested = False

    def write(self, frame: Frame, image: np.ndarray, labels: np.ndarray) -> None:
        cv2 = import_cv2()
        cv2.imshow(self.title, rgb_to_bgr(image))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.quit_requested = True

    def close(self) -> None:
        cv2 = import_cv2()
        with contextlib.suppress(Exception):  # the window may already be gone
            cv2.destroyWindow(self.title)


def output_sink(path: str | Path, fps: float | Callable[[], float], single_image: bool) -> Sink:
    """--output PATH: a video by suffix, an image file (single-image sources), else a folder of images."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in VIDEO_CODECS:
        return VideoSink(p, fps)
    if suffix in IMAGE_OUTPUTS:
        if not single_image:
            raise FcnDeployError(
                f"--output {p}: one image file for many frames; give a folder or a .mp4/.avi"
            )
        return ImageFileSink(p)
    if suffix and not p.is_dir():
        raise FcnDeployError(
            f"--output {p}: unknown type {suffix!r}; use .mp4/.avi/.mkv, .png/.jpg or a folder"
        )
    return ImageFolderSink(p)
