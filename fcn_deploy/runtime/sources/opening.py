"""A source from its command-line spec: a camera index or csi://N, a URL, a video, an image, a folder, a glob."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.images import IMAGE_EXTENSIONS, list_images
from fcn_deploy.runtime.opencv import import_cv2
from fcn_deploy.runtime.sources.base import Source
from fcn_deploy.runtime.sources.files import ImageFilesSource, VideoFileSource
from fcn_deploy.runtime.sources.live import CaptureReader, LiveSource

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
CSI_PIPELINE = (
    "nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
    "framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
    "appsink drop=true max-buffers=1 sync=false"
)


def _has_gstreamer() -> bool:
    cv2 = import_cv2()
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


def camera_source(spec: str, **live_kw: float) -> LiveSource:
    """'0' -> V4L2/default camera 0; 'csi://0' -> Jetson CSI sensor 0 through nvarguscamerasrc."""
    cv2 = import_cv2()
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
        cv2 = import_cv2()
        return LiveSource(
            lambda: CaptureReader(spec, cv2.CAP_FFMPEG, open_t, read_t), f"stream {spec}", **live_kw
        )
    path = Path(spec)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise FcnDeployError(
                f"{path}: folder has no images ({', '.join(IMAGE_EXTENSIONS)}); check the path"
            )
        return ImageFilesSource(files, str(path))
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
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
