"""Image preprocessing from the model card: the one implementation used by training, calibration and runtime.

Images are HxWx3 uint8 RGB numpy arrays everywhere in this project (sources convert at the boundary).
Torch-free on purpose: the deploy side uses it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fcn_deploy.core.card import Normalization


def to_rgb(image: np.ndarray) -> np.ndarray:
    """The one rule for image arrays: gray (HxW, HxWx1) is repeated, alpha (HxWx2, HxWx4) dropped, 16-bit
    samples keep their top 8 bits (what PIL and OpenCV do to a 16-bit colour PNG), others are clipped to
    0..255 -> HxWx3 uint8 RGB."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] in (1, 2):
        image = np.repeat(image[:, :, :1], 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an RGB uint8 image to (H, W)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map (never invents classes at boundaries)."""
    h, w = size
    if labels.shape[:2] == (h, w):
        return labels
    ys = (np.arange(h) * labels.shape[0] // h).clip(0, labels.shape[0] - 1)
    xs = (np.arange(w) * labels.shape[1] // w).clip(0, labels.shape[1] - 1)
    return labels[ys[:, None], xs[None, :]]


def _affine(norm: Normalization) -> tuple[np.ndarray, np.ndarray]:
    scale = np.float32(norm.scale) / np.asarray(norm.std, np.float32)
    offset = -np.asarray(norm.mean, np.float32) / np.asarray(norm.std, np.float32)
    return scale, offset


def normalize(image: np.ndarray, norm: Normalization) -> np.ndarray:
    """HxWx3 uint8 RGB -> 3xHxW float32, channel order and scaling from the model card."""
    if norm.channel_order == "BGR":
        image = image[:, :, ::-1]
    scale, offset = _affine(norm)
    # Written plane by plane into the CHW result: the same float32 arithmetic as (x * scale + offset) on HWC,
    # without the HWC temporaries and the transpose copy (about 10x faster; the runtime pipeline needs it).
    out = np.empty((3, *image.shape[:2]), np.float32)
    for c in range(3):
        np.multiply(image[:, :, c], scale[c], out=out[c], dtype=np.float32)
        out[c] += offset[c]
    return out


def preprocess(image: np.ndarray, norm: Normalization, size: tuple[int, int] | None = None) -> np.ndarray:
    """Any image array -> 1x3xHxW float32 network input, resized to `size` when given."""
    image = to_rgb(image)
    if size is not None:
        image = resize_image(image, size)
    return normalize(image, norm)[None]


def denormalize(chw: np.ndarray, norm: Normalization) -> np.ndarray:
    """Inverse of normalize (for drawing what the network saw)."""
    scale, offset = _affine(norm)
    hwc = (chw.transpose(1, 2, 0) - offset) / scale
    if norm.channel_order == "BGR":
        hwc = hwc[:, :, ::-1]
    return np.clip(np.rint(hwc), 0, 255).astype(np.uint8)
