"""Procedural shapes on textured backgrounds with exact masks: the dataset of the tests and the CPU demo.

Each foreground class is one shape kind drawn in its own hue range (with jitter, shading and pixel noise), on a
low-saturation background of smooth blobs and noise; later shapes occlude earlier ones and the mask follows
exactly. Item i of a split is a pure function of (seed, split, i), so runs are reproducible and train / val /
test never share an image. Images are generated on first access and kept in memory.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

from fcn_deploy.core.card import voc_palette
from fcn_deploy.core.datasets.base import SegmentationDataset
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.shapes import parse_hw

SHAPES = ("disc", "box", "triangle", "ellipse", "ring", "cross", "star")
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_LENGTH = {"train": 128, "val": 32, "test": 32}


class SyntheticShapes(SegmentationDataset):
    name = "synthetic"

    def __init__(
        self,
        root: str | None = None,
        split: str = "train",
        num_classes: int = 4,
        size: tuple[int, int] | int | str = (64, 64),
        length: int | None = None,
        seed: int = 0,
        max_shapes: int = 3,
    ) -> None:
        if split not in SPLITS:
            raise FcnDeployError(
                f"unknown split '{split}' for dataset 'synthetic'; use one of {', '.join(SPLITS)}"
            )
        if not 2 <= num_classes <= len(SHAPES) + 1:
            raise FcnDeployError(
                f"synthetic num_classes={num_classes} is out of range; use 2..{len(SHAPES) + 1} (background + shapes)"
            )
        if isinstance(size, int):
            size = (size, size)
        elif isinstance(size, str):
            size = parse_hw(size)
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) < 16:
            raise FcnDeployError(f"synthetic size {self.size} is too small; use at least 16x16")
        self.length = DEFAULT_LENGTH[split] if length is None else int(length)
        if self.length < 1 or max_shapes < 1:
            raise FcnDeployError("synthetic length and max_shapes must be at least 1")
        self.seed = int(seed)
        self.max_shapes = int(max_shapes)
        super().__init__(
            split, None, ("background", *SHAPES[: num_classes - 1]), voc_palette(num_classes), 255
        )
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length

    def image_id(self, i: int) -> str:
        return f"synthetic/{self.split}/{self.seed}/{i}"

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} synthetic images")
        i %= self.length
        if i not in self._cache:
            rng = np.random.default_rng([self.seed, SPLITS[self.split], i])
            self._cache[i] = draw_scene(rng, self.size, self.num_classes, self.max_shapes)
        image, labels = self._cache[i]
        return image.copy(), labels.copy()


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a small random grid upsampled bilinearly."""
    grid = Image.fromarray(rng.random((cells, cells)).astype(np.float32), mode="F")
    return np.asarray(grid.resize((size[1], size[0]), Image.BILINEAR))


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    a, b = (
        np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.2), rng.uniform(0.25, 0.85)))
        for _ in "ab"
    )
    t = _smooth_noise(rng, size, int(rng.integers(3, 7)))[..., None]
    return (a * (1 - t) + b * t) * 255


def _shape_colour(rng: np.random.Generator, cls: int, num_classes: int) -> np.ndarray:
    """Class k owns a hue sector; saturated colours keep it apart from the greyish background."""
    hue = ((cls - 1) / (num_classes - 1) + rng.uniform(-0.04, 0.04)) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))) * 255


def _polygon(cx: float, cy: float, radii: np.ndarray, angles: np.ndarray) -> list[tuple[float, float]]:
    return [(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, angles, strict=True)]


def _draw_shape(
    draw: ImageDraw.ImageDraw, kind: str, rng: np.random.Generator, cx: float, cy: float, r: float
) -> None:
    rot = rng.uniform(0, 2 * np.pi)
    if kind == "disc":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1)
    elif kind == "box":
        half = np.arctan(rng.uniform(0.5, 1.0))  # aspect ratio of the rectangle
        angles = rot + np.array([half, np.pi - half, np.pi + half, -half])
        draw.polygon(_polygon(cx, cy, np.full(4, r), angles), fill=1)
    elif kind == "triangle":
        draw.polygon(_polygon(cx, cy, np.full(3, r), rot + np.arange(3) * 2 * np.pi / 3), fill=1)
    elif kind == "ellipse":
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        aspect = rng.uniform(0.35, 0.6)
        pts = [(r * np.cos(a), aspect * r * np.sin(a)) for a in t]
        c, s = np.cos(rot), np.sin(rot)
        draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts], fill=1)
    elif kind == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1)
        inner = r * rng.uniform(0.4, 0.6)
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif kind == "cross":
        arm = r * rng.uniform(0.3, 0.45)
        for a in (rot, rot + np.pi / 2):
            half = np.arctan(arm / r)
            angles = a + np.array([half, np.pi - half, np.pi + half, -half])
            draw.polygon(_polygon(cx, cy, np.full(4, np.hypot(r, arm)), angles), fill=1)
    elif kind == "star":
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        draw.polygon(_polygon(cx, cy, radii, rot + np.arange(10) * np.pi / 5), fill=1)
    else:
        raise ValueError(kind)


def draw_scene(
    rng: np.random.Generator, size: tuple[int, int], num_classes: int, max_shapes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One (image, labels) pair: textured background plus 1..max_shapes shapes, the mask drawn exactly."""
    h, w = size
    side = min(h, w)
    image = _background(rng, size)
    labels = np.zeros(size, np.uint8)
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        cls = int(rng.integers(1, num_classes))
        r = rng.uniform(0.14, 0.3) * side
        cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
        layer = Image.new("L", (w, h), 0)
        _draw_shape(ImageDraw.Draw(layer), SHAPES[cls - 1], rng, cx, cy, r)
        inside = np.asarray(layer, dtype=bool)
        shading = 0.8 + 0.4 * _smooth_noise(rng, size, 4)[..., None]  # lit unevenly: not a flat colour
        image = np.where(inside[..., None], _shape_colour(rng, cls, num_classes) * shading, image)
        labels[inside] = cls
    image = image + rng.normal(0, 8, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels
