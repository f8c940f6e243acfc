"""The budget of the INT8 guard and of the --auto plan is judged on the drop's bootstrap upper bound over the plan
images (sensitivity.Measurement.bound), not on the one measured drop a few dozen images give."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from test_precision_plan import auto_cfg, fragile_fcn, write_images

from fcn_deploy.calibration.api import QuantizeConfig, quantize
from fcn_deploy.calibration.images import ImageSet, Sample
from fcn_deploy.calibration.sensitivity import Judge, PlanImages, _mean_iou
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.metrics import metrics_from_matrix


def test_stacked_mean_iou_is_the_metrics_mean_iou():
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 50, (20, 5, 5)).astype(np.float64)
    stack[3, 2, :] = stack[3, :, 2] = 0  # a class absent from labels and predictions: left out of the mean
    stack[4, 1, :] = 0  # absent from the labels only: IoU 0, counted
    expected = [metrics_from_matrix(m)["mean_iou"] for m in stack]
    np.testing.assert_allclose(_mean_iou(stack), expected)


def labelled_set(n: int, classes: int = 4, hw: int = 32) -> ImageSet:
    rng = np.random.default_rng(1)
    samples = [Sample(f"i{k}", (rng.random((hw, hw, 3)) * 255).astype(np.uint8),
                      rng.integers(0, classes, (hw, hw)).astype(np.uint8)) for k in range(n)]  # fmt: skip
    return ImageSet("mem", tuple(s.id for s in samples), "fp", 0, classes, 255, _read=lambda: iter(samples))


@pytest.mark.parametrize("metric", ["miou", "agreement"])
def test_the_fp32_model_itself_has_no_drop_and_no_bound(tmp_path, metric):
    model = fragile_fcn(tmp_path / "m.onnx")
    judge = Judge(model, PlanImages(labelled_set(6)), None, ModelCard.from_onnx(onnx.load(str(model))), metric)
    m = judge.measure_bytes(model.read_bytes())
    assert m.drop == pytest.approx(0.0, abs=1e-9) and m.bound == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("metric", ["miou", "agreement"])
def test_a_noisy_drop_is_bounded_above_it_and_the_same_on_every_run(tmp_path, metric):
    """Another model (other weights) scored against the FP32 one: the bound lies above the measured drop, and the
    resamples are fixed, so a second judge gives the same bound."""
    model, other = fragile_fcn(tmp_path / "m.onnx"), fragile_fcn(tmp_path / "o.onnx", seed=3)
    card = ModelCard.from_onnx(onnx.load(str(model)))
    first, second = (Judge(model, PlanImages(labelled_set(8)), None, card, metric).measure_bytes(other.read_bytes())
                     for _ in range(2))  # fmt: skip
    assert first.bound > first.drop and first.bound == second.bound


def test_a_budget_the_drop_meets_but_its_bound_does_not_warns(tmp_path, caplog):
    model, calib = fragile_fcn(tmp_path / "m.onnx"), write_images(tmp_path / "calib", 12)
    plain = dict(model=model, calib_data=calib, precision="int8", method="minmax", latency_runs=1, num_images=8,
                 plan_images=4, metric="agreement")  # fmt: skip
    g = quantize(QuantizeConfig(**plain, max_drop=100.0, output=tmp_path / "a.onnx")).summary["guard"]
    assert g["bound"] > g["drop"], g
    between = (g["drop"] + g["bound"]) / 2
    with caplog.at_level(logging.WARNING):
        g2 = quantize(QuantizeConfig(**plain, max_drop=between, output=tmp_path / "b.onnx")).summary["guard"]
    assert g2["drop"] == pytest.approx(g["drop"]) and g2["drop"] < between and g2["within_budget"] is False
    (line,) = [r.getMessage() for r in caplog.records if "--max-drop" in r.getMessage()]
    assert f"up to {g['bound']:.2f}" in line


def test_every_plan_step_records_its_bound_and_the_plan_meets_the_budget_on_it(tmp_path):
    model, calib = fragile_fcn(tmp_path / "m.onnx"), write_images(tmp_path / "calib", 12)
    plan = quantize(auto_cfg(model, calib, metric="agreement", max_drop=1.0)).summary["auto_plan"]
    assert all(s["bound"] >= s["drop"] for s in plan["steps"])
    assert plan["final"]["bound"] <= 1.0 and plan["final"]["drop"] <= plan["final"]["bound"]


def labelled_by(model, images: ImageSet, card: ModelCard) -> ImageSet:
    """`images` relabelled with `model`'s own predictions: that model is then right on every pixel."""
    from fcn_deploy.core.scoring import score
    from fcn_deploy.runtime.ort_backend import OrtBackend

    plan = PlanImages(images)
    with OrtBackend(model, card=card) as b:
        preds = score(b, plan, None, keep_predictions=True).predictions
    samples = [Sample(s.id, s.image, p.astype(np.uint8)) for s, p in zip(images, preds, strict=True)]
    return ImageSet("mem", images.ids, "fp", 0, images.num_classes, 255, _read=lambda: iter(samples))


def test_the_mean_iou_drop_counts_losses_only(tmp_path):
    """Another model scored against the FP32 one on labels where every pixel it changes is a loss (the FP32 model's
    own labels: drop = net > 0), a gain (the other model's labels: net < 0, drop 0, as FP32 itself) or either
    (random labels: drop >= net)."""
    model, other = fragile_fcn(tmp_path / "m.onnx"), fragile_fcn(tmp_path / "o.onnx", seed=3)
    card = ModelCard.from_onnx(onnx.load(str(model)))
    images = labelled_set(6)

    def measured(labels: ImageSet):
        judge = Judge(model, PlanImages(labels), None, card, "miou")
        return judge.measure_bytes(other.read_bytes())

    losses, gains, mixed = (measured(s) for s in (labelled_by(model, images, card), labelled_by(other, images, card),
                                                  images))  # fmt: skip
    assert losses.agreement < 0.99 and losses.net > 1.0 and losses.drop == pytest.approx(losses.net)
    assert gains.net < -1.0 and gains.drop == pytest.approx(0.0, abs=1e-9) and gains.bound == pytest.approx(0.0)
    assert mixed.drop >= mixed.net and mixed.drop > mixed.net + 1e-6
