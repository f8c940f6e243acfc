"""Drawing: exact palette colours, alpha blending, side-by-side, legend and class heat maps."""

from __future__ import annotations

import numpy as np
import pytest
from test_runtime_helpers import PALETTE, channel_card, colour_image

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.runtime.visualize import (
    Visualizer,
    VisualizeSpec,
    blend,
    colorize,
    colour_bar_box,
    legend_row_px,
    palette_lut,
    softmax,
)

CARD = channel_card(("labels", "logits"))


def render(mode: str, alpha: float = 0.5, legend: bool = False, scores=None, is_probs=False):
    frame, labels = colour_image(30, 60)
    spec = VisualizeSpec.parse(mode, CARD, alpha, legend)
    return frame, labels, Visualizer(CARD, spec).render(frame, labels, scores, is_probs)


def test_mask_and_opaque_overlay_are_the_palette():
    _, labels, mask = render("mask")
    _, _, opaque = render("overlay", alpha=1.0)
    for c, colour in enumerate(PALETTE):
        assert (mask[labels == c] == colour).all()
        assert (opaque[labels == c] == colour).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("classes", [11, 300])
def test_colorize_is_the_palette_row_of_each_label(dtype, classes):
    """Every label's colour is its palette row, whatever the label dtype; labels past the palette (255, the
    ignore index) draw black; more than 256 classes take the general path."""
    rng = np.random.default_rng(classes)
    palette = tuple(tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(classes))
    lut = palette_lut(palette)
    labels = rng.integers(0, min(classes, 256), (7, 13)).astype(dtype)
    labels[0, :3] = (0, classes - 1 if classes < 256 else 255, 255 if classes < 256 else 0)
    out = colorize(labels, lut)
    assert out.shape == (7, 13, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (out == lut[labels.astype(np.intp)]).all()
    if classes < 256:
        assert (out[0, 2] == 0).all()


def test_half_overlay_blends_frame_and_palette():
    frame, labels, out = render("overlay", alpha=0.5)
    want = np.rint((frame.astype(float) + np.asarray(PALETTE)[labels]) / 2)
    assert np.abs(out.astype(float) - want).max() <= 1
    assert (blend(frame, frame, 0.3) == frame).all()


def test_side_by_side_and_legend():
    frame, labels, out = render("side-by-side", alpha=1.0)
    assert out.shape == (30, 120, 3)
    assert (out[:, :60] == frame).all()
    assert (out[:, 60:][labels == 1] == PALETTE[1]).all()
    _, _, plain = render("mask")
    _, _, with_legend = render("mask", legend=True)
    assert (with_legend != plain).any()


def test_heatmap_follows_the_class_probability():
    frame, labels = colour_image(30, 60)
    logits = np.stack([(labels == c).astype(np.float32) * 8 for c in range(3)])  # confident where labels say
    spec = VisualizeSpec.parse("heatmap:green", CARD, alpha=1.0)
    out = Visualizer(CARD, spec).render(frame, labels, logits[:, ::2, ::2].copy(), False)  # half-size scores
    hot, cold = out[labels == 1].astype(int), out[labels == 0].astype(int)
    assert hot[:, 0].mean() > 100 and hot[:, 2].mean() < 60  # jet: high probability is red
    assert cold[:, 2].mean() > 100 and cold[:, 0].mean() < 60  # low probability is blue
    probs = softmax(logits, 0)
    same = Visualizer(CARD, VisualizeSpec.parse("heatmap:1", CARD, alpha=1.0)).render(
        frame, labels, probs, True
    )
    assert np.abs(same[labels == 1].astype(int) - hot).mean() < 30


def test_bad_specs():
    with pytest.raises(FcnDeployError, match="'cat' is not in this model; its classes are: red, green, blue"):
        VisualizeSpec.parse("heatmap:cat", CARD)
    with pytest.raises(FcnDeployError, match="choose overlay"):
        VisualizeSpec.parse("sparkles", CARD)
    with pytest.raises(FcnDeployError, match="needs a class"):
        VisualizeSpec.parse("heatmap", CARD)
    with pytest.raises(FcnDeployError, match="--alpha"):
        VisualizeSpec.parse("overlay", CARD, alpha=2)
    frame, labels = colour_image(8, 8)
    with pytest.raises(FcnDeployError, match="logits or probs"):
        Visualizer(CARD, VisualizeSpec.parse("heatmap:red", CARD)).render(frame, labels, None)


SIZES = [(30, 60), (120, 160), (360, 480), (1080, 1920)]


def changed_box(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around every pixel where a and b differ (exclusive ends)."""
    ys, xs = np.nonzero((a != b).any(-1))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("h,w", SIZES)
def test_side_by_side_legend_stays_inside_the_overlay_panel(h, w):
    frame, labels = colour_image(h, w)
    plain = Visualizer(CARD, VisualizeSpec.parse("side-by-side", CARD)).render(frame, labels)
    out = Visualizer(CARD, VisualizeSpec.parse("side-by-side", CARD, legend=True)).render(frame, labels)
    x0, y0, x1, y1 = changed_box(out, plain)
    assert w <= x0 and x1 <= 2 * w and y1 <= h  # inside the right (overlay) panel
    assert (out[:, :w] == frame).all()  # the input panel untouched
    assert y1 - y0 <= 3 * legend_row_px(h) + legend_row_px(h) // 2  # three classes: three rows and a margin
    if h >= 120:  # every swatch drawn in its palette colour
        for colour in PALETTE:
            assert (out[y0:y1, x0:x1] == colour).all(-1).sum() >= (round(0.7 * legend_row_px(h)) - 2) ** 2  # inside its outline


def test_legend_is_scaled_to_the_frame():
    heights = []
    for h, w in SIZES[1:]:
        frame, labels = colour_image(h, w)
        plain = Visualizer(CARD, VisualizeSpec.parse("overlay", CARD)).render(frame, labels)
        out = Visualizer(CARD, VisualizeSpec.parse("overlay", CARD, legend=True)).render(frame, labels)
        x0, y0, x1, y1 = changed_box(out, plain)
        assert x1 <= w and y1 <= h
        heights.append(y1 - y0)
    assert heights[0] < heights[1] < heights[2]
    assert heights[2] > 2 * heights[1]  # 1080 vs 360 rows: a fixed-size legend would not grow


@pytest.mark.parametrize("h,w", SIZES[1:])
def test_heatmap_draws_a_colour_bar_from_one_to_zero(h, w):
    frame, labels = colour_image(h, w)
    logits = np.stack([np.full((h, w), 8.0, np.float32), np.zeros((h, w), np.float32),
                       np.zeros((h, w), np.float32)])  # fmt: skip  # P(green) ~ 0 everywhere: all blue
    out = Visualizer(CARD, VisualizeSpec.parse("heatmap:green", CARD, alpha=1.0)).render(frame, labels, logits)
    x0, y0, x1, y1 = colour_bar_box(h, w)
    assert 0 < x0 < x1 <= w and 0 < y0 < y1 < h and y1 - y0 == round(h / 2)
    bar = out[y0:y1, x0:x1].astype(int)
    top, bottom = bar[: max(2, (y1 - y0) // 20)], bar[-max(2, (y1 - y0) // 20):]
    assert top[..., 0].min() > 100 and top[..., 2].max() < 60  # jet at 1: red
    assert bottom[..., 2].min() > 100 and bottom[..., 0].max() < 60  # jet at 0: blue
    middle = bar[(y1 - y0) // 2]
    assert middle[:, 1].min() > 150  # 0.5: green-cyan
    plain_blue = out[h - 2, w // 2]  # far from the bar and the text: the probability's own colour
    assert plain_blue[2] > 100 and plain_blue[0] < 60
    same = (out == plain_blue).all(-1)
    same[: y1 + h // 10, x0 - w // 4 :] = True  # the bar and its ticks: their corner only
    same[h - max(h // 8, 24) :, : w // 2] = True  # the P(green) line
    assert same.all()


@pytest.mark.parametrize("h,w", [(20, 24), (48, 64), (95, 300)])
def test_no_colour_bar_on_a_frame_too_small_for_one(h, w):
    assert colour_bar_box(h, w) is None
    frame, labels = colour_image(h, w)
    logits = np.zeros((3, h, w), np.float32)  # P = 1/3 everywhere
    out = Visualizer(CARD, VisualizeSpec.parse("heatmap:green", CARD, alpha=1.0)).render(frame, labels, logits)
    assert out.shape == (h, w, 3)
    if h >= 48:  # (a 20-px frame is all caption)
        assert (out[: h // 2] == out[0, 0]).all()  # one colour above the caption: no bar
