"""The `--auto` plan picture (calibration.plan_plot): drawn from a Plan.to_dict() alone, a PNG of the stated size
with the kept groups marked, and skipped with one info line when matplotlib is missing."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from PIL import Image

from fcn_deploy.calibration.plan_plot import KEPT, draw_plan, plan_rows, step_labels


def measurement(drop: float) -> dict:
    return {"drop": drop, "miou": 0.8 - drop / 100, "agreement": 1 - drop / 200}


def hand_plan(groups: int = 12, kept: tuple[str, ...] = ("conv3", "add0")) -> dict:
    """What Plan.to_dict() writes for a plan that kept `kept` in FP32 after one pruned step."""
    names = [f"conv{i}" for i in range(groups - 1)] + ["add0"]
    sens = [{"group": g, "op_type": "Add" if g.startswith("add") else "Conv", "nodes": [g, f"{g}_relu"],
             "only_quantized": measurement(3.0 / (i + 1)), "all_but_quantized": measurement(4.0 - 2.0 / (i + 1)),
             "gain_in_fp32": 2.0 / (i + 1), "sensitivity": 3.0 / (i + 1), "latency_share": 1.0 / groups}
            for i, g in enumerate(names)]  # fmt: skip
    steps = [{"kept": [], **measurement(4.0)}, {"kept": ["conv3"], **measurement(1.1)},
             {"kept": ["conv3", "add0"], **measurement(0.2)},
             {"kept": list(kept), **measurement(0.25), "pruned": "conv5"}]  # fmt: skip
    return {"metric": "miou", "max_drop": 0.3, "plan_images": 16, "plan_source": "synthetic:train",
            "miou_fp32": 0.8, "full_int8": measurement(4.0), "final": measurement(0.25), "kept_groups": list(kept),
            "kept_nodes": [n for s in sens if s["group"] in kept for n in s["nodes"]],
            "kept_latency_share": len(kept) / groups, "steps": steps, "evaluations": 27, "sensitivity": sens}


def kept_pixels(path) -> int:
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    want = np.array([int(KEPT[i: i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - want).sum(-1) <= 6).sum())


@pytest.mark.parametrize("groups", [3, 12, 30])
def test_plan_picture_is_a_png_of_the_stated_size(tmp_path, groups):
    plan = hand_plan(groups)
    path = draw_plan(plan, tmp_path / "m.plan.png")
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == plan_rows(plan).size_px()
    assert plan_rows(plan).size_px()[1] == pytest.approx(100 * max(4.5, 1.9 + 0.28 * groups), abs=1)


def test_plan_rows_read_both_views_the_latency_and_the_steps():
    rows = plan_rows(hand_plan(12))
    assert rows.names[:2] == ["conv0", "conv1"] and rows.names[-1] == "add0"
    assert [n for n, k in zip(rows.names, rows.kept, strict=True) if k] == ["conv3", "add0"]
    assert rows.alone_drop[0] == pytest.approx(3.0) and rows.recovered[1] == pytest.approx(1.0)
    assert sum(rows.latency_pct) == pytest.approx(100.0)
    assert [w for w, _ in rows.steps] == ["full INT8", "+ conv3", "+ add0", "- conv5"]
    assert [d for _, d in rows.steps] == [4.0, 1.1, 0.2, 0.25]


def test_kept_groups_are_marked_in_the_picture(tmp_path):
    marked = kept_pixels(draw_plan(hand_plan(12), tmp_path / "kept.png"))
    none = hand_plan(12, kept=())
    none["steps"] = none["steps"][:1]
    unmarked = kept_pixels(draw_plan(none, tmp_path / "none.png"))
    assert marked > unmarked + 200  # bars, labels and the row bands in the kept colour


def test_each_steps_bound_is_read_and_drawn_above_its_drop(tmp_path):
    plan = hand_plan(12)
    for step, bound in zip(plan["steps"], [4.6, 1.5, 0.28, 0.29], strict=True):
        step["bound"] = bound
    plan["final"]["bound"] = 0.29
    rows = plan_rows(plan)
    assert rows.bounds == [4.6, 1.5, 0.28, 0.29] and rows.confidence == 0.9
    with_bounds = grey_pixels(draw_plan(plan, tmp_path / "b.png"))
    without = grey_pixels(draw_plan(hand_plan(12), tmp_path / "n.png"))
    assert with_bounds > without + 50  # the bars from each drop up to its bound


def grey_pixels(path) -> int:
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    return int((np.abs(rgb - 115).sum(-1) <= 6).sum())  # matplotlib's "0.45" grey


def test_no_plan_or_no_matplotlib_draws_nothing(tmp_path, monkeypatch, caplog):
    assert draw_plan(None, tmp_path / "a.png") is None
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with caplog.at_level(logging.INFO, logger="fcn_deploy.calibration.plan_plot"):
        assert draw_plan(hand_plan(), tmp_path / "b.png") is None
    assert not (tmp_path / "b.png").exists()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "needs matplotlib" in lines[0] and "b.png" in lines[0]


def test_group_names_lose_the_exporters_scope_and_op_type():
    from fcn_deploy.calibration.plan_plot import short_names

    names = ["/model/conv1_2/Conv", "/model/upscore2/ConvTranspose", "/model/Add", "/model/Add_1"]
    assert short_names(names, ["Conv", "ConvTranspose", "Add", "Add"]) == ["conv1_2", "upscore2", "Add", "Add_1"]
    assert short_names(["/m/a/Conv", "/m/a"], ["Conv", "Add"]) == ["/m/a/Conv", "/m/a"]  # would be ambiguous
    assert short_names(["conv0"], ["Conv"]) == ["conv0"]


def test_quantize_auto_writes_the_plan_picture_beside_the_model(tmp_path):
    from test_precision_plan import auto_cfg, fragile_fcn, write_images

    from fcn_deploy.calibration.api import QuantizeConfig, quantize

    model, calib = fragile_fcn(tmp_path / "m.onnx"), write_images(tmp_path / "calib", 12)
    result = quantize(auto_cfg(model, calib, target="onnxruntime", metric="agreement", max_drop=1.0,
                               output=tmp_path / "m.int8.onnx"))  # fmt: skip
    picture = tmp_path / "m.int8.plan.png"
    plan = result.summary["auto_plan"]
    assert plan["kept_groups"][:1] == ["score"]
    with Image.open(picture) as im:
        assert im.format == "PNG" and im.size == plan_rows(plan).size_px()
    assert kept_pixels(picture) > 200  # the fragile group is marked
    plain = quantize(QuantizeConfig(model=model, calib_data=calib, precision="int8", method="minmax", num_images=8,
                                    latency_runs=1, output=tmp_path / "plain.onnx"))  # fmt: skip
    assert plain.output.is_file() and not (tmp_path / "plain.plan.png").exists()  # no --auto: no picture


def test_the_kept_precision_names_the_labels(tmp_path):
    plan = {**hand_plan(4), "kept_precision": "fp16"}
    assert plan_rows(plan).precision == "FP16" and plan_rows(hand_plan(4)).precision == "FP32"  # older plans: FP32
    from fcn_deploy.calibration.plan_plot import title_of

    assert "kept in FP16 (conv3, add0)" in title_of(plan)
    assert draw_plan(plan, tmp_path / "fp16.png").is_file()


def test_a_long_plan_title_stays_short():
    """13 kept CamVid groups listed in the title ran off both edges of the picture: past a few names the panels'
    marks name them."""
    from fcn_deploy.calibration.plan_plot import TITLE_NAMES_MAX, title_of

    kept = [f"/model/conv{i}_1/Conv" for i in range(13)]
    title = title_of({**hand_plan(4), "kept_groups": kept})
    assert "13 group(s) kept in FP32 (marked in the panels)" in title and kept[0] not in title
    assert max(len(line) for line in title.splitlines()) < TITLE_NAMES_MAX + 60


def test_steps_that_round_alike_are_labelled_once():
    """The CamVid plans ended in runs like 0.12, 0.12, 0.09, 0.09 whose labels overlapped: one label per run, at
    its last step, and the plan's value always."""
    assert step_labels([0.304, 0.29, 0.121, 0.118, 0.091, 0.089]) == [(0, "0.30"), (1, "0.29"), (3, "0.12"),
                                                                      (5, "0.09")]  # fmt: skip
    assert step_labels([0.5]) == [(0, "0.50")] and step_labels([]) == []
