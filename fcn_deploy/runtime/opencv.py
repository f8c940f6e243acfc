"""The OpenCV boundary of the runtime: a quiet import, and BGR arrays brought to the project's RGB."""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np

from fcn_deploy.core.preprocess import to_rgb


def import_cv2() -> ModuleType:
    """cv2, imported on first use (`fcn-deploy --help` must not load it)."""
    # OpenCV and FFmpeg print warnings for every failed open; our own one-line errors replace them.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    return cv2


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """An OpenCV frame (gray, BGR, BGRA; 8 or 16 bit) -> HxWx3 uint8 RGB, by the one rule of `to_rgb`."""
    if image.ndim == 3 and image.shape[2] >= 3:
        image = image[:, :, 2::-1]
    return to_rgb(image)
