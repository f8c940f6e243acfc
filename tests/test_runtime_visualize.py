"""Drawing: exact palette colours, alpha blending, side-by-side, legend and class heat maps."""

from __future__ import annotations

import numpy as np
import pytest
from test_runtime_helpers import PALETTE, channel_card, colour_image

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.runtime.visualize import Visualizer, VisualizeSpec, blend, softmax

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
