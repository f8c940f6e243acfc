"""`fcn-deploy report` on a tiny synthetic set: every file, the JSON row contract, skipped rows with reasons,
metrics that match an independent evaluation, reuse of built models, and one-line errors for bad input."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fcn_deploy.cli import main
from fcn_deploy.core.card import ModelCard
from fcn_deploy.report.inputs import ReportConfig
from fcn_deploy.report.plots import pareto_front
from fcn_deploy.report.run import build_report
from fcn_deploy.report.samples import pick_images
from fcn_deploy.report.write import make_row, sort_rows

REQUIRED = ("backend", "precision", "size", "status", "mean_iou", "pixel_accuracy", "agreement_with_fp32",
            "latency_ms_median", "latency_ms_p95", "model_bytes")
SIZE = (32, 32)
SYNTHETIC = {"num_classes": 4, "size": list(SIZE), "length": 4}
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def tiny_checkpoint(path: Path) -> Path:
    """An untrained width-1/16 FCN-8s saved the way training saves it (its card says: synthetic, 4 classes)."""
    import torch

    from fcn_deploy.core.datasets import build_dataset
    from fcn_deploy.core.model_config import ModelConfig
    from fcn_deploy.training.checkpoint import save_checkpoint
    from fcn_deploy.training.fcn import build_model

    ds = build_dataset("synthetic", None, "train", **SYNTHETIC)
    torch.manual_seed(0)
    model = build_model(ModelConfig("fcn8s", 4, width=0.0625, padding="same"))
    card = ModelCard.default(
        "fcn8s", 4, class_names=ds.class_names, palette=ds.palette, width=0.0625, padding="same",
        opt_shape=SIZE, training_dataset="synthetic", training_resolution=SIZE,
        provenance={"train_config": {"dataset": "synthetic", "dataset_options": SYNTHETIC}},
    )
    save_checkpoint(path, model, card)
    return path


def fast(**kw) -> ReportConfig:
    return ReportConfig(calib_images=4, latency_warmup_s=0.0, latency_duration_s=0.0, latency_iterations=5,
                        num_samples=2, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    ckpt = tiny_checkpoint(root / "tiny.pt")
    lines: list[str] = []
    result = build_report(fast(output=root / "out", dataset="synthetic", checkpoint=ckpt), echo=lines.append)
    return result, ckpt, lines


def test_writes_every_file(built):
    result, _, lines = built
    out = result.output
    for name in ("report.md", "report.json", "report.csv", "pareto.png", "per_class.png", "models/model.onnx",
                 "models/model.int8.onnx", "models/model.fp16.onnx"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for png in ("pareto.png", "per_class.png", *[f"samples/{p.name}" for p in (out / "samples").glob("*.png")]):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.width > 100
    samples = sorted((out / "samples").glob("*.png"))
    assert samples and "most_disagreement" in samples[0].name
    with Image.open(samples[0]) as im:  # input | ground truth | FP32 | FP16 | INT8, each at least 128 px
        assert im.width >= 5 * 128
    assert not list(out.rglob(".*.tmp")), "temp files left behind"
    assert any("[1/3]" in s for s in lines) and any("[3/3]" in s for s in lines)


def test_json_rows_carry_the_contract(built):
    result, _, _ = built
    doc = json.loads((result.output / "report.json").read_text())
    rows = doc["rows"]
    combos = {(r["backend"], r["precision"]) for r in rows}
    assert combos == {(b, p) for b in ("torch", "onnxruntime", "tensorrt") for p in ("fp32", "fp16", "int8")}
    for r in rows:
        assert set(REQUIRED) <= set(r), r
        assert r["size"] == "32x32" and r["status"] in ("ok", "skipped", "failed")
        if r["status"] == "ok":
            for key in ("mean_iou", "pixel_accuracy", "agreement_with_fp32"):
                assert 0.0 <= r[key] <= 1.0
            assert 0 < r["latency_ms_median"] <= r["latency_ms_p95"]
            assert r["model_bytes"] > 0 and set(r["per_class_iou"]) == set(doc["meta"]["class_names"])
            assert r["fw_iou"] is not None and r["mean_accuracy"] is not None
        else:
            assert r["reason"], f"{r['backend']} {r['precision']} is {r['status']} without a reason"
    ok = {(r["backend"], r["precision"]): r for r in rows if r["status"] == "ok"}
    assert {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")} <= set(ok)
    assert ok[("onnxruntime", "fp32")]["agreement_with_fp32"] == 1.0
    assert ok[("torch", "fp32")]["agreement_with_fp32"] > 0.999  # same weights, another runtime
    assert ok[("onnxruntime", "int8")]["model_bytes"] < 0.5 * ok[("onnxruntime", "fp32")]["model_bytes"]
    measured = [r["latency_ms_median"] for r in rows if r["status"] == "ok"]
    assert measured == sorted(measured) and rows[: len(measured)] == [r for r in rows if r["status"] == "ok"]
    assert doc["meta"]["num_images"] == 4 and doc["meta"]["environment"]["cpu_model"]


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here: its rows are measured, not skipped")
def test_tensorrt_rows_are_skipped_with_the_reason(built):
    result, _, _ = built
    trt = [r for r in result.rows if r["backend"] == "tensorrt"]
    assert len(trt) == 3
    assert all(r["status"] == "skipped" and r["reason"] == "TensorRT not installed" for r in trt)
    md = (result.output / "report.md").read_text()
    assert md.count("skipped: TensorRT not installed") == 3


def test_markdown_and_csv_match_json(built):
    result, _, _ = built
    out = result.output
    rows = json.loads((out / "report.json").read_text())["rows"]
    with open(out / "report.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert [(t["backend"], t["precision"]) for t in table] == [(r["backend"], r["precision"]) for r in rows]
    assert "iou_background" in table[0]
    md = (out / "report.md").read_text()
    assert "| backend | precision | size | status |" in md and "Per-class IoU" in md
    body = [line for line in md.splitlines() if line.startswith("| onnxruntime") or line.startswith("| torch")]
    first_ok = next(r for r in rows if r["status"] == "ok")
    assert body[0].startswith(f"| {first_ok['backend']} | {first_ok['precision']} |")


def test_metrics_match_an_independent_evaluation(built):
    """Run the FP32 ONNX through ONNX Runtime and the metric module by hand: the report row must agree."""
    from fcn_deploy.core.datasets import build_dataset
    from fcn_deploy.core.metrics import ConfusionMatrix
    from fcn_deploy.core.preprocess import preprocess
    from fcn_deploy.runtime.ort_backend import OrtBackend

    result, _, _ = built
    ds = build_dataset("synthetic", None, "val", **SYNTHETIC)
    cm = ConfusionMatrix(ds.num_classes, ds.ignore_index)
    with OrtBackend(result.output / "models" / "model.onnx") as backend:
        for i in range(len(ds)):
            image, labels = ds[i]
            cm.update(labels, backend.run(preprocess(image, backend.card.normalization))["labels"][0])
    expected = cm.compute(ds.class_names)
    row = next(r for r in result.rows if (r["backend"], r["precision"]) == ("onnxruntime", "fp32"))
    assert row["mean_iou"] == pytest.approx(expected["mean_iou"])
    assert row["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"])


def test_fp32_row_equals_the_one_score_and_evaluate(built):
    """One model, one set of images: report's FP32 ONNX row, core.scoring.score and `fcn-deploy evaluate` agree."""
    from fcn_deploy.core.datasets import build_dataset
    from fcn_deploy.core.scoring import score
    from fcn_deploy.runtime.ort_backend import OrtBackend

    result, _, _ = built
    onnx_path = result.output / "models" / "model.onnx"
    ds = build_dataset("synthetic", None, "val", **SYNTHETIC)
    with OrtBackend(onnx_path) as backend:
        expected = score(backend, ds, SIZE).metrics
    row = next(r for r in result.rows if (r["backend"], r["precision"]) == ("onnxruntime", "fp32"))
    assert row["mean_iou"] == expected["mean_iou"]
    r = CliRunner().invoke(main, ["evaluate", str(onnx_path), "--dataset", "synthetic", "--resize", "32x32", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["mean_iou"] == pytest.approx(row["mean_iou"], abs=1e-12)


def test_existing_models_are_reused(built):
    result, ckpt, _ = built
    models = result.output / "models"
    before = {p.name: p.stat().st_mtime_ns for p in models.glob("*.onnx")}
    lines: list[str] = []
    again = build_report(
        fast(output=result.output, dataset="synthetic", checkpoint=ckpt, precisions=("fp32", "int8"),
             backends=("onnxruntime",), max_images=2),
        echo=lines.append,
    )
    after = {p.name: p.stat().st_mtime_ns for p in models.glob("*.onnx")}
    assert before == after
    assert sum("reusing" in s for s in lines) == 2
    assert [(r["backend"], r["precision"], r["status"]) for r in sorted(again.rows, key=lambda r: r["precision"])] \
        == [("onnxruntime", "fp32", "ok"), ("onnxruntime", "int8", "ok")]


def test_onnx_input_without_checkpoint(built, tmp_path):
    result, _, _ = built
    doc = build_report(fast(output=tmp_path / "r", dataset="synthetic", onnx=result.output / "models" / "model.onnx",
                            precisions=("fp32",), backends=("torch", "onnxruntime"), max_images=2), echo=lambda s: None)
    by = {r["backend"]: r for r in doc.rows}
    assert by["onnxruntime"]["status"] == "ok"
    assert by["torch"]["status"] == "skipped" and "--checkpoint" in by["torch"]["reason"]


def test_sort_pick_and_front_helpers():
    rows = [make_row("tensorrt", "int8", "8x8", "skipped", "TensorRT not installed"),
            make_row("onnxruntime", "fp32", "8x8", latency_ms_median=3.0),
            make_row("onnxruntime", "int8", "8x8", latency_ms_median=1.0)]
    assert [r["precision"] for r in sort_rows(rows)] == ["int8", "fp32", "int8"]
    assert pick_images([0.99, 0.5, 0.9, 1.0, 0.95]) == [(1, "most disagreement"), (4, "median agreement"), (0, "first")]
    assert pareto_front([(1.0, 50.0), (2.0, 60.0), (3.0, 55.0), (0.5, 40.0)]) == [3, 0, 1]


# --- bad input: one line, no traceback, nothing written -------------------------------------------------------
def _invoke(args):
    return CliRunner().invoke(main, ["report", *args])


def _assert_one_line_error(r, message):
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--backends", "cuda"], "--backends 'cuda': unknown"),
        (["--precisions", "fp32,int4"], "--precisions 'int4': unknown"),
        (["--backends", "auto,torch"], "cannot be combined"),
        (["--sizes", "4000x4000"], "outside the profile"),
        (["--max-images", "0"], "at least 1"),
    ],
)
def test_bad_options(built, tmp_path, extra, message):
    result, _, _ = built
    out = tmp_path / "never"
    r = _invoke(["--onnx", str(result.output / "models" / "model.onnx"), "--dataset", "synthetic",
                 "--output", str(out), *extra])
    _assert_one_line_error(r, message)
    assert not out.exists()


def test_output_that_is_a_file(built, tmp_path):
    result, ckpt, _ = built
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    r = _invoke(["--checkpoint", str(ckpt), "--dataset", "synthetic", "--output", str(target)])
    _assert_one_line_error(r, "is a file, not a directory")
    assert target.read_text() == "keep me"


def test_dataset_without_masks(built, tmp_path):
    result, ckpt, _ = built
    root = tmp_path / "data"
    (root / "val" / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("background\ndisc\nbox\ntriangle\n")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "val" / "images" / "a.png")
    out = tmp_path / "never"
    r = _invoke(["--checkpoint", str(ckpt), "--dataset", "folder", "--data-root", str(root), "--output", str(out)])
    _assert_one_line_error(r, "has no masks")
    assert not out.exists()


def test_needs_exactly_one_model(tmp_path):
    r = _invoke(["--dataset", "synthetic", "--output", str(tmp_path / "x")])
    _assert_one_line_error(r, "exactly one model")


def test_cuda_without_a_cuda_onnxruntime_is_refused_before_writing(built, tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    result, _, _ = built
    out = tmp_path / "never"
    r = _invoke(["--onnx", str(result.output / "models" / "model.onnx"), "--dataset", "synthetic", "--device", "cuda",
                 "--output", str(out)])
    assert r.exit_code == 3
    _assert_one_line_error(r, "no CUDA provider")
    assert not out.exists()


def test_sample_panels_are_large_titled_and_scored(tmp_path):
    from fcn_deploy.report.samples import MIN_PANEL_PX, image_miou, write_sample

    truth = np.zeros((32, 32), np.uint8)
    truth[8:24, 8:24] = 1
    truth[0, :] = 255  # ignored
    pred = truth.copy()
    pred[8:16, 8:24] = 0  # half the square lost
    # class 0: 32*31 - 256 + 128 correct of union 32*31 - 128; class 1: 128 of 256
    expected = ((32 * 31 - 256) / (32 * 31 - 128) + 128 / 256) / 2
    assert image_miou(pred, truth, 2) == pytest.approx(expected)
    assert np.isnan(image_miou(pred, np.full_like(truth, 255), 2))
    image = np.full((32, 32, 3), 128, np.uint8)
    path = write_sample(tmp_path / "s.png", image, truth, [("FP32", truth), ("INT8", pred)],
                        [(0, 0, 0), (200, 30, 30)], ("background", "thing"))  # fmt: skip
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[0] >= MIN_PANEL_PX >= 256 and arr.shape[1] >= 4 * MIN_PANEL_PX
    legend = arr[-20:]  # the class colour swatches under the panels
    assert (np.abs(legend.astype(int) - (200, 30, 30)).sum(-1) == 0).any()


def test_markdown_flags_rows_over_the_drop_budget():
    from fcn_deploy.report.write import best_within_budget, markdown_table, render_json

    rows = [make_row("onnxruntime", "fp32", "8x8", mean_iou=0.8, latency_ms_median=2.0, model="a.onnx"),
            make_row("onnxruntime", "int8", "8x8", mean_iou=0.7, latency_ms_median=1.0, model="a.int8.onnx")]
    table = markdown_table(rows)
    int8 = next(s for s in table.splitlines() if "| int8 |" in s)
    fp32 = next(s for s in table.splitlines() if "| fp32 |" in s)
    assert "OVER BUDGET" in int8 and "-10.00" in int8 and "OVER BUDGET" not in fp32
    assert best_within_budget(rows)["model"] == "a.onnx"
    doc = json.loads(render_json(rows, {}))
    assert {r["precision"]: r["over_budget"] for r in doc["rows"]} == {"int8": True, "fp32": False}


def test_pareto_labels_of_near_identical_points_do_not_overlap():
    from fcn_deploy.report.plots import _place_labels, _pyplot

    plt = _pyplot()
    rows = [make_row("onnxruntime", p, "64x64", mean_iou=0.887, latency_ms_median=1.4 + 0.01 * i)
            for i, p in enumerate(("fp32", "fp16", "int8", "bf16"))]  # fmt: skip
    fig, ax = plt.subplots(figsize=(8, 4.8))
    try:
        xs, ys = [r["latency_ms_median"] for r in rows], [100 * r["mean_iou"] for r in rows]
        ax.scatter(xs, ys)
        ax.set_xlim(0, 3)
        ax.set_ylim(87.5, 90)
        fig.canvas.draw()
        boxes = _place_labels(fig, ax, rows, xs, ys)
    finally:
        plt.close(fig)
    assert len(boxes) == 4
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


def auto_rows() -> list[dict]:
    """FP32, FP16, plain INT8 and an --auto INT8 row (auto_plan_mark's fields) close together on the plot."""
    mark = {"auto_plan_kept_groups": ["conv3"], "auto_plan_metric": "miou", "auto_plan_max_drop": 0.3,
            "auto_plan_drop": 0.2}  # fmt: skip
    return [make_row("onnxruntime", "fp32", "64x64", mean_iou=0.887, latency_ms_median=2.0),
            make_row("onnxruntime", "fp16", "64x64", mean_iou=0.886, latency_ms_median=1.9),
            make_row("onnxruntime", "int8", "64x64", mean_iou=0.80, latency_ms_median=1.0),
            make_row("onnxruntime", "int8", "64x64", mean_iou=0.885, latency_ms_median=1.1, **mark)]  # fmt: skip


def test_pareto_rings_and_labels_the_auto_plan():
    from fcn_deploy.report.plots import _pyplot, pareto_figure

    fig = pareto_figure(auto_rows(), "t")
    try:
        ax = fig.axes[0]
        rings = [c for c in ax.collections if c.get_gid() == "auto-plan"]
        assert len(rings) == 1 and rings[0].get_offsets().tolist() == [[1.1, 88.5]]
        texts = {t.get_text(): t for t in ax.texts}
        assert "onnxruntime int8 auto 64x64 (1 in FP32)" in texts and "onnxruntime int8 64x64" in texts
        assert texts["onnxruntime int8 auto 64x64 (1 in FP32)"].get_fontweight() == "bold"
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert {"ONNX Runtime", "FP32", "FP16", "INT8", "INT8 --auto plan", "Pareto front"} <= set(legend)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        from matplotlib.text import Text

        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the text alone, not its leader line
        for i, a in enumerate(boxes):
            assert not any(a.overlaps(b) for b in boxes[i + 1:]), ax.texts[i].get_text()
    finally:
        _pyplot().close(fig)
    plain = pareto_figure(auto_rows()[:3])
    try:
        assert not [c for c in plain.axes[0].collections if c.get_gid() == "auto-plan"]
        assert "INT8 --auto plan" not in [t.get_text() for t in plain.axes[0].get_legend().get_texts()]
    finally:
        _pyplot().close(plain)


def test_report_draws_the_auto_plan_from_the_model_card(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    from test_plan_plot import hand_plan

    from fcn_deploy.report.plots import plot_auto_plans

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])]))  # fmt: skip
    plan = hand_plan(8)
    ModelCard.default("fcn8s", 4, provenance={"lowering": {"target": "tensorrt", "auto_plan": plan}}).attach(model)
    onnx.save(model, str(tmp_path / "model.int8-trt-auto.onnx"))
    rows = auto_rows()
    rows[3]["model"] = str(tmp_path / "model.int8-trt-auto.onnx")
    rows.append({**rows[3], "size": "32x32"})  # a second size of the same model: drawn once
    files = plot_auto_plans(rows, tmp_path)
    assert list(files) == ["auto_plan_tensorrt"] and files["auto_plan_tensorrt"] == tmp_path / "auto_plan_tensorrt.png"
    from fcn_deploy.calibration.plan_plot import plan_rows

    with Image.open(files["auto_plan_tensorrt"]) as im:
        assert im.format == "PNG" and im.size == plan_rows(plan).size_px()
    assert plot_auto_plans(auto_rows(), tmp_path / "none") == {}  # no --auto row with a model: nothing


def test_sample_legend_wraps_to_show_every_class(tmp_path):
    from fcn_deploy.core.card import voc_palette
    from fcn_deploy.report.samples import MIN_PANEL_PX, write_sample

    names = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
             "tvmonitor")  # fmt: skip
    palette = voc_palette(21)
    truth = (np.arange(32 * 32).reshape(32, 32) % 21).astype(np.uint8)
    path = write_sample(tmp_path / "voc.png", np.zeros((32, 32, 3), np.uint8), truth, [("FP32", truth)],
                        palette, names)  # fmt: skip
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB")).astype(int)
    assert arr.shape[1] < 4 * MIN_PANEL_PX  # three panels: too narrow for one line of 21 names
    below = arr[MIN_PANEL_PX + 40:]  # under the panels (and their titles)
    for name, colour in zip(names, palette, strict=True):
        assert (np.abs(below - colour).sum(-1) == 0).sum() >= 100, name  # its swatch (15x15 inside the outline)


def test_per_class_bars_differ_in_colour_and_zeros_are_marked():
    from fcn_deploy.report.plots import _pyplot, per_class_figure

    rows = [make_row("torch", "fp32", "64x64", mean_iou=0.8, latency_ms_median=5.0),
            *auto_rows()]  # fmt: skip
    for r in rows:
        r["per_class_iou"] = {"background": 0.9, "thing": 0.0 if r["precision"] == "int8" else 0.5}
    fig = per_class_figure(rows, ["background", "thing"])
    try:
        ax = fig.axes[0]
        bars = {c.get_label(): c for c in ax.containers if c.get_label() and not c.get_label().startswith("_")}
        assert list(bars) == ["torch fp32 64x64", "onnxruntime fp32 64x64", "onnxruntime fp16 64x64",
                              "onnxruntime int8 64x64", "onnxruntime int8 auto 64x64"]  # fmt: skip
        colours = [tuple(round(v, 3) for v in c.patches[0].get_facecolor()) for c in bars.values()]
        assert len(set(colours)) == len(colours)  # two FP32 and two INT8 rows: still five colours
        zeros = [p for p in ax.patches if p.get_gid() == "zero"]
        assert len(zeros) == 2 and all(p.get_height() > 0 for p in zeros)  # both INT8 rows' 0% on "thing"
        assert [t.get_text() for t in ax.texts] == ["0", "0"]
        assert {tuple(round(v, 3) for v in p.get_edgecolor()) for p in zeros} == set(colours[3:])
    finally:
        _pyplot().close(fig)


def test_auto_point_label_names_the_kept_precision():
    from fcn_deploy.report.plots import point_label

    row = auto_rows()[3]
    assert point_label(row) == "onnxruntime int8 auto 64x64 (1 in FP32)"  # a plan older than kept_precision
    assert point_label({**row, "auto_plan_kept_precision": "fp16"}) == "onnxruntime int8 auto 64x64 (1 in FP16)"
    assert point_label(auto_rows()[2]) == "onnxruntime int8 64x64"
