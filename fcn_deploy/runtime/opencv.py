"""The OpenCV boundary of the runtime: a quiet import, and BGR arrays brought to the project's RGB and back."""

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
    if image.ndim == 3 and image.shape[2] in (3, 4) and image.dtype in (np.uint8, np.uint16):
        # cvtColor swaps channels with SIMD (~0.03 ms at 360x480) where a reversed-stride numpy copy takes ~1.1
        # ms; it is the same pure permutation (BGRA: alpha dropped), so the pixels are identical.
        cv2 = import_cv2()
        code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB
        return to_rgb(cv2.cvtColor(image, code))
    if image.ndim == 3 and image.shape[2] >= 3:
        image = image[:, :, 2::-1]
    return to_rgb(image)


def rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8 RGB image -> the contiguous BGR array OpenCV writers and windows take (a new array)."""
    cv2 = import_cv2()
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
