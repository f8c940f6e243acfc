"""Image files: the one extension list, the one folder listing and the one decoder (PIL; torch- and cv2-free).

Training data, calibration images and inference image files all go through `read_image`, so one photo becomes
one array everywhere. The policy:
  - EXIF orientation is applied: a phone photo stored sideways with an orientation tag is upright in training,
    calibration and inference alike (OpenCV's IMREAD_COLOR applies it, IMREAD_UNCHANGED does not; PIL does
    neither by itself, so it is explicit here);
  - the result is HxWx3 uint8 RGB: alpha is dropped (not composited), grayscale is repeated into three
    channels, and wider-than-8-bit samples keep their top 8 bits (`core.preprocess.to_rgb`, the rule OpenCV
    frames follow too).
Video files and cameras are decoded by OpenCV in `fcn_deploy.runtime.sources`; stills never are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.preprocess import to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Modes PIL keeps as integer arrays wider than 8 bits or as floats; to_rgb brings them to uint8 by one rule.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (and its subfolders when `recursive`), sorted by path."""
    folder = Path(folder)
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if is_image_file(p))


def error_reason(exc: BaseException) -> str:
    """The first line of an exception's message (PIL's errors can span several)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_image(path: Path) -> np.ndarray:
    """An image file -> HxWx3 uint8 RGB, upright by its EXIF orientation; a corrupt file is a one-line error."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in _WIDE_MODES:
                array = np.asarray(im)
                if array.dtype.kind in "iu" and im.mode == "I":
                    array = array.clip(0, 65535).astype(np.uint16)  # PIL's 32-bit mode holds 16-bit PNGs
            else:
                array = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise FcnDeployError(f"cannot read image {path} ({error_reason(exc)}); replace or remove the file") from None
    return to_rgb(array)
