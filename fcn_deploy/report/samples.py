"""Side-by-side sample images for a report: input | ground truth | FP32 | INT8 (or whichever predictions exist).

Which images: the one where INT8 disagrees most with FP32 (the place to look first), plus the first and the
median-agreement image for context. Colours come from the model card's palette; ignored pixels draw black.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fcn_deploy.core.atomic import write_bytes
from fcn_deploy.core.preprocess import resize_labels
from fcn_deploy.runtime.visualize import colorize, palette_lut

HEADER_PX = 16
GAP_PX = 4
MIN_PANEL_PX = 128  # tiny images are enlarged (nearest) so that they can be seen


def pick_images(agreement: Sequence[float], count: int = 3) -> list[tuple[int, str]]:
    """(index, why) for up to `count` images: lowest agreement first, then the median one, then the first."""
    if not agreement:
        return []
    order = np.argsort(np.asarray(agreement, np.float64), kind="stable")
    picks = [(int(order[0]), "most disagreement"), (int(order[len(order) // 2]), "median agreement"), (0, "first")]
    out: list[tuple[int, str]] = []
    for i, why in picks:
        if i not in [j for j, _ in out]:
            out.append((i, why))
    return out[:count]


def side_by_side(panels: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """Titled HxWx3 panels in one row, each resized (nearest) to the first panel's height (at least MIN_PANEL_PX)."""
    h = max(panels[0][1].shape[0], MIN_PANEL_PX)
    tiles = []
    for title, img in panels:
        if img.shape[0] != h:
            w = max(1, round(img.shape[1] * h / img.shape[0]))
            img = np.asarray(Image.fromarray(img).resize((w, h), Image.NEAREST))
        tile = Image.new("RGB", (img.shape[1], h + HEADER_PX), (255, 255, 255))
        tile.paste(Image.fromarray(img), (0, HEADER_PX))
        ImageDraw.Draw(tile).text((2, 2), title, fill=(0, 0, 0))
        tiles.append(tile)
    width = sum(t.width for t in tiles) + GAP_PX * (len(tiles) - 1)
    canvas = Image.new("RGB", (width, h + HEADER_PX), (255, 255, 255))
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + GAP_PX
    return np.asarray(canvas)


def write_sample(
    path: Path,
    image: np.ndarray,
    ground_truth: np.ndarray,
    predictions: Sequence[tuple[str, np.ndarray]],
    palette: Sequence[Sequence[int]],
) -> Path:
    """Draw input | ground truth | each prediction (label maps at any size: shown at the image's size)."""
    lut = palette_lut(tuple(tuple(c) for c in palette))
    hw = image.shape[:2]
    panels = [("input", image), ("ground truth", colorize(resize_labels(ground_truth, hw), lut))]
    panels += [(name, colorize(resize_labels(labels, hw), lut)) for name, labels in predictions]
    buf = io.BytesIO()
    Image.fromarray(side_by_side(panels)).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())
    return path
