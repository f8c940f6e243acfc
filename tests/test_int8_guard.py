"""The INT8 guard (calibration.guard): every INT8 lowering measures its drop against FP32 on calibration images held
out from the ranges, warns past --max-drop in one line suggesting --auto, and --strict refuses (nothing written).
On the deliberately fragile FCN of test_precision_plan, whose plain INT8 loses most of its pixels."""

from __future__ import annotations

import json
import logging

import onnx
import pytest
from click.testing import CliRunner
from test_precision_plan import fragile_fcn, write_images

from fcn_deploy.calibration.api import QuantizeConfig, quantize
from fcn_deploy.cli import main
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError


@pytest.fixture
def setup(tmp_path):
    return fragile_fcn(tmp_path / "m.onnx"), write_images(tmp_path / "calib", 12)


def cfg(model, calib, **kw) -> QuantizeConfig:
    kw = {"precision": "int8", "method": "minmax", "latency_runs": 1, "num_images": 8, "plan_images": 4, **kw}
    return QuantizeConfig(model=model, calib_data=calib, **kw)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("target", ["tensorrt", "onnxruntime"])
def test_plain_int8_past_the_budget_warns_once_and_records_the_drop(setup, caplog, target):
    model, calib = setup
    with caplog.at_level(logging.WARNING):
        result = quantize(cfg(model, calib, target=target, max_drop=1.0))
    g = result.summary["guard"]
    assert g["measured"] and g["metric"] == "agreement" and g["images"] == 4 and g["max_drop"] == 1.0
    assert g["drop"] > 1.0 and g["within_budget"] is False
    assert g["drop"] == pytest.approx(100 * (1 - g["agreement"]))
    # held out from the ranges: 4 of the 8 fitted nothing
    assert result.summary["range_images"] == 4 and result.summary["num_images"] == 8
    (line,) = [w for w in warnings_of(caplog) if "--max-drop" in w]
    assert "\n" not in line and f"{g['drop']:.2f} points" in line and "--auto" in line and str(result.output) in line
    # recorded in the card's provenance and in the summary JSON
    card = ModelCard.from_onnx(onnx.load(str(result.output)), str(result.output))
    assert card.provenance["lowering"]["guard"] == json.loads(result.summary_path.read_text())["guard"] == g


def test_within_budget_says_nothing_and_a_sound_model_passes(tmp_path, caplog):
    model = fragile_fcn(tmp_path / "ok.onnx", fragile=False)
    calib = write_images(tmp_path / "c", 12)
    with caplog.at_level(logging.WARNING):
        g = quantize(cfg(model, calib, max_drop=50.0)).summary["guard"]
    assert g["within_budget"] is True and g["drop"] <= 50.0
    assert not [w for w in warnings_of(caplog) if "--max-drop" in w]


def test_strict_refuses_in_one_line_and_writes_nothing(setup, tmp_path):
    model, calib = setup
    out = tmp_path / "never.onnx"
    with pytest.raises(FcnDeployError) as e:
        quantize(cfg(model, calib, output=out, strict=True, max_drop=1.0))
    msg = str(e.value)
    assert "\n" not in msg and "--strict" in msg and "--auto" in msg and "over --max-drop 1" in msg
    assert not out.exists() and not out.with_suffix(".json").exists()

    r = CliRunner().invoke(main, ["quantize", str(model), "--int8", "--calib-data", str(calib), "--num-images", "8",
                                  "--plan-images", "4", "--method", "minmax", "--strict", "-o", str(out)])  # fmt: skip
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert [ln for ln in r.output.splitlines() if ln.startswith("Error")][0].count("over --max-drop 0.3") == 1
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_auto_plan_passes_its_own_guard(setup):
    model, calib = setup
    s = quantize(cfg(model, calib, auto=True, metric="agreement", max_drop=1.0)).summary
    g, plan = s["guard"], s["auto_plan"]
    assert g["within_budget"] is True
    assert g["drop"] == pytest.approx(plan["final"]["drop"])  # the plan's images, the lowering it chose


def test_metric_selects_the_guard_metric(tmp_path, caplog):
    model = fragile_fcn(tmp_path / "m.onnx")
    with pytest.raises(FcnDeployError, match="--metric miou needs images with masks"):  # no longer ignored
        quantize(cfg(model, write_images(tmp_path / "c", 6), metric="miou"))
    s = quantize(QuantizeConfig(model=model, precision="int8", calib_dataset="synthetic:train", num_images=8,
                                plan_images=4, eval_images=2, method="minmax", latency_runs=1,
                                calib_shapes=((32, 32),), max_drop=100.0)).summary  # fmt: skip
    assert s["guard"]["metric"] == "miou" and s["guard"]["miou_fp32"] is not None  # masks: mean IoU by default
    s = quantize(QuantizeConfig(model=model, precision="int8", calib_dataset="synthetic:train", num_images=8,
                                plan_images=4, eval_images=2, method="minmax", latency_runs=1, metric="agreement",
                                calib_shapes=((32, 32),), output=tmp_path / "a.onnx", max_drop=100.0)).summary  # fmt: skip
    assert s["guard"]["metric"] == "agreement"


def test_one_calibration_image_is_lowered_unchecked_with_a_note(setup, caplog):
    model, calib = setup
    with caplog.at_level(logging.WARNING):
        s = quantize(cfg(model, calib, num_images=1)).summary
    assert s["guard"]["measured"] is False and "range_images" not in s
    assert any("not checked against FP32" in w for w in warnings_of(caplog))


@pytest.mark.parametrize("flag", [["--max-drop", "1"], ["--metric", "agreement"], ["--plan-images", "4"],
                                  ["--strict"], ["--auto"]])  # fmt: skip
def test_budget_options_without_int8_are_refused(setup, tmp_path, flag):
    model, calib = setup
    r = CliRunner().invoke(main, ["quantize", str(model), "--fp16", "--calib-data", str(calib), *flag])
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
    assert r.exit_code != 0 and len(errors) == 1 and f"{flag[0]} applies to --int8 only" in errors[0], r.output
    assert not (tmp_path / "m.fp16.onnx").exists()
    r = CliRunner().invoke(main, ["build-engine", str(model), "--fp16", "--calib-data", str(calib), *flag])
    assert r.exit_code == 2 and f"{flag[0]} applies to --int8 only" in r.output, r.output


def test_chain_reuse_checks_the_guard_budget_and_strict(setup, tmp_path):
    from fcn_deploy.chain.lowered import LoweredOnnx

    model, calib = setup
    out = tmp_path / "l.int8.onnx"
    calibration = {"calib_data": calib, "num_images": 8, "method": "minmax", "plan_images": 4, "max_drop": 1.0}
    step = LoweredOnnx(model, "int8", out, calibration=calibration, say=lambda s: None)
    step()
    assert step.mismatch(out, model) is None
    assert "max_drop" in LoweredOnnx(model, "int8", out, calibration={**calibration, "max_drop": 2.0}).mismatch(out, model)
    assert "plan_images" in LoweredOnnx(model, "int8", out, calibration={**calibration, "plan_images": 3}).mismatch(
        out, model)
    assert "--strict" in LoweredOnnx(model, "int8", out, calibration={**calibration, "strict": True}).mismatch(out, model)


def test_guard_cache_skips_the_scoring_and_misses_on_another_graph(setup, tmp_path, monkeypatch):
    from fcn_deploy.calibration import sensitivity

    model, calib = setup
    calls = []
    real = sensitivity.Judge.measure_bytes
    monkeypatch.setattr(sensitivity.Judge, "measure_bytes", lambda self, data: calls.append(1) or real(self, data))
    cache = tmp_path / "calib.json"
    first = quantize(cfg(model, calib, cache=cache, output=tmp_path / "a.onnx", max_drop=1.0)).summary["guard"]
    assert len(calls) == 1 and (tmp_path / "calib.json.guard.json").is_file()
    again = quantize(cfg(model, calib, cache=cache, output=tmp_path / "b.onnx", max_drop=90.0)).summary["guard"]
    assert len(calls) == 1  # the same graph on the same images: not scored again; the budget is re-judged
    assert again["drop"] == first["drop"] and first["within_budget"] is False and again["within_budget"] is True
    quantize(cfg(model, calib, cache=cache, output=tmp_path / "c.onnx", target="onnxruntime"))
    assert len(calls) == 2  # another graph
