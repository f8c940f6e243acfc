"""Training augmentation in numpy: random scale, random crop with ignore-padding, horizontal flip.

Evaluation uses whole images and no transform. Resizing reuses fcn_deploy.core.preprocess (bilinear for images,
nearest for labels) so there is one resize implementation in the project.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fcn_deploy.core.preprocess import resize_image, resize_labels


@dataclass(frozen=True)
class TrainTransform:
    """crop is (H, W). Regions outside the scaled image are padded with `fill` (image) and `ignore_index`
    (labels), so padding never counts in the loss. Pass the dataset mean as `fill` for mean-padding."""

    crop: tuple[int, int]
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    ignore_index: int = 255
    fill: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if len(self.crop) != 2 or min(self.crop) < 1:
            raise ValueError(f"crop must be (H, W) with positive sides, got {self.crop}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")

    def __call__(
        self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if image.shape[:2] != labels.shape:
            raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
        lo, hi = self.scale_range
        scale = rng.uniform(lo, hi) if hi > lo else lo
        h, w = image.shape[:2]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image, labels = resize_image(image, size), resize_labels(labels, size)
        image, labels = self._pad(image, labels, rng)
        ch, cw = self.crop
        y = int(rng.integers(0, image.shape[0] - ch + 1))
        x = int(rng.integers(0, image.shape[1] - cw + 1))
        image, labels = image[y : y + ch, x : x + cw], labels[y : y + ch, x : x + cw]
        if self.hflip and rng.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(labels)

    def _pad(
        self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Grow to at least the crop size, the image placed at a random offset inside the padding."""
        (h, w), (ch, cw) = image.shape[:2], self.crop
        ph, pw = max(0, ch - h), max(0, cw - w)
        if not (ph or pw):
            return image, labels
        y, x = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
        padded = np.empty((h + ph, w + pw, 3), image.dtype)
        padded[:] = np.asarray(self.fill, image.dtype)
        padded[y : y + h, x : x + w] = image
        padded_labels = np.full((h + ph, w + pw), self.ignore_index, labels.dtype)
        padded_labels[y : y + h, x : x + w] = labels
        return padded, padded_labels
