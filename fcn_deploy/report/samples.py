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

HEADER_PX = 40  # two title lines: what made the panel, and its mean IoU on this image
GAP_PX = 6
MIN_PANEL_PX = 256  # small images are enlarged (nearest) so that they can be seen
FONT_PX = 15
SWATCH_PX = 16
LEGEND_LINE_PX = SWATCH_PX + 8


def _font(size: int = FONT_PX):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def image_miou(pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore_index: int = 255) -> float:
    """Mean IoU of one label map over the classes present in its ground truth or prediction (ignored pixels
    excluded); NaN when every pixel is ignored."""
    valid = (truth != ignore_index) & (truth < num_classes)
    t, p = truth[valid].astype(np.int64), np.clip(pred[valid].astype(np.int64), 0, num_classes - 1)
    if t.size == 0:
        return float("nan")
    conf = np.bincount(num_classes * t + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    return float(np.mean(inter[present] / union[present]))


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


def side_by_side(panels: Sequence[tuple[str, np.ndarray]],
                 legend: Sequence[tuple[str, Sequence[int]]] = ()) -> np.ndarray:  # fmt: skip
    """Titled HxWx3 panels in one row, each resized (nearest) to the first panel's height (at least MIN_PANEL_PX),
    with lines of class colour swatches under them (as many as every class needs). A title may hold two lines (\\n)."""
    h = max(panels[0][1].shape[0], MIN_PANEL_PX)
    font = _font()
    tiles = []
    for title, img in panels:
        if img.shape[0] != h:
            w = max(1, round(img.shape[1] * h / img.shape[0]))
            img = np.asarray(Image.fromarray(img).resize((w, h), Image.NEAREST))
        tile = Image.new("RGB", (img.shape[1], h + HEADER_PX), (255, 255, 255))
        tile.paste(Image.fromarray(img), (0, HEADER_PX))
        ImageDraw.Draw(tile).multiline_text((3, 2), title, fill=(0, 0, 0), font=font, spacing=3)
        tiles.append(tile)
    width = sum(t.width for t in tiles) + GAP_PX * (len(tiles) - 1)
    lines = _legend_lines(legend, width, font)
    legend_h = len(lines) * LEGEND_LINE_PX + 6 if lines else 0
    canvas = Image.new("RGB", (width, h + HEADER_PX + legend_h), (255, 255, 255))
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + GAP_PX
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        y = h + HEADER_PX + 6 + k * LEGEND_LINE_PX
        for x, name, colour in line:
            draw.rectangle((x, y, x + SWATCH_PX, y + SWATCH_PX), fill=tuple(int(c) for c in colour), outline=(0, 0, 0))
            draw.text((x + SWATCH_PX + 4, y), name, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _legend_lines(legend: Sequence[tuple[str, Sequence[int]]], width: int,
                  font) -> list[list[tuple[int, str, Sequence[int]]]]:  # fmt: skip
    """The swatches as lines of (x, name, colour) that fit `width`: every class shown, the picture never widened."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[list[tuple[int, str, Sequence[int]]]] = []
    x = width
    for name, colour in legend:
        step = SWATCH_PX + 16 + int(draw.textlength(name, font=font))
        if x + step - 12 > width and (not lines or lines[-1]):
            lines.append([])
            x = 3
        lines[-1].append((x, name, colour))
        x += step
    return lines


def write_sample(
    path: Path,
    image: np.ndarray,
    ground_truth: np.ndarray,
    predictions: Sequence[tuple[str, np.ndarray]],
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str] = (),
    backend: str = "ONNX Runtime",
    ignore_index: int = 255,
) -> Path:
    """Draw input | ground truth | each prediction (label maps at any size: shown at the image's size), each
    prediction titled with its backend and precision and its mean IoU on this image, over a class colour legend."""
    lut = palette_lut(tuple(tuple(c) for c in palette))
    hw = image.shape[:2]
    truth = resize_labels(ground_truth, hw)
    panels = [("input\n", image), ("ground truth\n", colorize(truth, lut))]
    for name, labels in predictions:
        pred = resize_labels(labels, hw)
        miou = image_miou(pred, truth, len(palette), ignore_index)
        score = "mean IoU -" if np.isnan(miou) else f"mean IoU {100 * miou:.1f}%"
        panels.append((f"{backend} {name}\n{score}", colorize(pred, lut)))
    legend = list(zip(class_names, palette, strict=False))
    buf = io.BytesIO()
    Image.fromarray(side_by_side(panels, legend)).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())
    return path
