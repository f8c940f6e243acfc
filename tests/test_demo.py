"""The demo, reduced (1 epoch, 32x32 images, a handful of them): every stage runs for real and ends in a report."""

from __future__ import annotations

import json

from click.testing import CliRunner

from fcn_deploy.cli import main
from fcn_deploy.demo import DemoConfig, closing_text, run_demo


def test_reduced_demo_runs_end_to_end(tmp_path):
    lines: list[str] = []
    cfg = DemoConfig(output=tmp_path / "demo", epochs=1, width=0.0625, size=(32, 32), images=6,
                     calib_images=3, latency_s=0.05)
    result = run_demo(cfg, echo=lines.append)
    out = tmp_path / "demo"
    assert (out / "train" / "best.pt").is_file() and (out / "train" / "log.jsonl").is_file()
    report = out / "report"
    for name in ("report.md", "report.json", "report.csv", "pareto.png", "per_class.png", "models/model.onnx",
                 "models/model.fp16.onnx", "models/model.int8-auto.onnx"):
        assert (report / name).is_file(), name
    rows = json.loads((report / "report.json").read_text())["rows"]
    ok = {(r["backend"], r["precision"]) for r in rows if r["status"] == "ok"}
    assert {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("onnxruntime", "fp16")} <= ok
    assert all(r["reason"] for r in rows if r["status"] != "ok")
    # progress all the way: training epochs, each report step
    assert any(s.startswith("epoch 1/1") for s in lines)
    assert any("[1/3]" in s for s in lines) and any("[3/3]" in s for s in lines)
    text = closing_text(result)
    assert "| backend | precision |" in text and str(report / "report.md") in text
    assert result.seconds["total"] >= result.seconds["train"] > 0


def test_demo_output_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    r = CliRunner().invoke(main, ["demo", "--output", str(target)])
    assert r.exit_code == 1 and "is a file, not a directory" in r.output and "Traceback" not in r.output
    assert target.read_text() == "x"


def _ok(report_dir):
    rows = json.loads((report_dir / "report.json").read_text())["rows"]
    return {(r["backend"], r["precision"]) for r in rows if r["status"] == "ok"}


def test_rerun_reuses_what_is_valid_and_a_changed_option_starts_clean(tmp_path):
    out = tmp_path / "demo"
    base = dict(output=out, epochs=1, width=0.0625, size=(32, 32), images=6, calib_images=3, latency_s=0.05,
                threads=1)
    run_demo(DemoConfig(**base), echo=lambda s: None)
    ckpt_sha = json.loads((out / "demo.json").read_text())["checkpoint_sha256"]
    stale = out / "report" / "samples" / "99_from_an_older_run.png"
    stale.write_bytes(b"old")
    int8 = out / "report" / "models" / "model.int8-auto.onnx"
    int8_mtime = int8.stat().st_mtime_ns

    lines: list[str] = []
    again = run_demo(DemoConfig(**base), echo=lines.append)
    assert again.reused_training and any("reusing" in s and "best.pt" in s for s in lines)
    assert not any(s.startswith("epoch ") for s in lines)  # no training
    assert int8.stat().st_mtime_ns == int8_mtime  # the chain reused the lowered model (same parent + options)
    assert not stale.exists()
    assert json.loads((out / "demo.json").read_text())["checkpoint_sha256"] == ckpt_sha

    # an FP32 export the chain would not reuse takes its lowered models and calibration caches with it
    (out / "report" / "models" / "model.onnx").write_bytes(b"not the export of this checkpoint")
    lines.clear()
    run_demo(DemoConfig(**base), echo=lines.append)
    assert any(s.strip().startswith("removing") and "models" in s for s in lines)
    assert {("onnxruntime", "int8"), ("onnxruntime", "fp16")} <= _ok(out / "report")

    lines.clear()
    changed = run_demo(DemoConfig(**{**base, "epochs": 2}), echo=lines.append)
    assert not changed.reused_training
    assert any("starting clean" in s and "epochs" in s for s in lines)
    assert any(s.startswith("epoch 2/2") for s in lines)
    # the old calibration caches went with the old models: FP16 and INT8 are rebuilt, never a stale-cache failure
    assert {("onnxruntime", "int8"), ("onnxruntime", "fp16")} <= _ok(out / "report")
    assert json.loads((out / "demo.json").read_text())["options"]["epochs"] == 2


def test_demo_refuses_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    r = CliRunner().invoke(main, ["demo", "--output", str(out), "--threads", "1"])
    assert r.exit_code == 1 and "thesis.tex" in r.output and "Traceback" not in r.output
    assert (out / "thesis.tex").read_text() == "keep me"


def test_next_line_names_the_fastest_model_within_the_budget(tmp_path):
    from fcn_deploy.demo import DemoResult
    from fcn_deploy.report.run import ReportResult
    from fcn_deploy.report.write import make_row

    rows = [
        make_row("onnxruntime", "fp32", "64x64", mean_iou=0.90, latency_ms_median=4.0, model="m/model.onnx"),
        make_row("onnxruntime", "int8", "64x64", mean_iou=0.53, latency_ms_median=1.0, model="m/model.int8.onnx"),
        make_row("onnxruntime", "fp16", "64x64", mean_iou=0.895, latency_ms_median=3.0, model="m/model.fp16.onnx"),
        make_row("torch", "fp32", "64x64", mean_iou=0.90, latency_ms_median=0.5, model="t/best.pt"),
    ]
    result = DemoResult(ReportResult(tmp_path / "report", rows, {}, {}), {}, {"total": 1, "train": 1, "report": 0},
                        {"threads": 1, "how": "--threads"})
    text = closing_text(result)
    nxt = [s for s in text.splitlines() if s.startswith("next:")]
    assert len(nxt) == 1 and "m/model.fp16.onnx" in nxt[0] and "int8" not in nxt[0].split("(")[0]
    assert "--resume" not in text and "--max-minutes" not in text
    table = [s for s in text.splitlines() if s.startswith("| onnxruntime | int8")]
    assert "OVER BUDGET" in table[0] and "-37.00" in table[0]


def test_next_line_never_names_a_model_that_failed_its_int8_budget(tmp_path):
    """An INT8 model whose guard measured a drop past its --max-drop is skipped even when the report's images
    would let it through; the demo's budget (0.5 points) decides the rest, and the demo lowers with --auto."""
    from test_precision_plan import fragile_fcn, write_images

    from fcn_deploy.calibration.api import QuantizeConfig, quantize
    from fcn_deploy.demo import DemoResult, lowering_guard
    from fcn_deploy.report.run import ReportResult
    from fcn_deploy.report.write import make_row

    model = fragile_fcn(tmp_path / "m.onnx")
    failed = quantize(QuantizeConfig(model=model, precision="int8", calib_data=write_images(tmp_path / "c", 8),
                                     method="minmax", num_images=8, plan_images=4, latency_runs=1,
                                     max_drop=0.5)).output  # fmt: skip
    assert lowering_guard(str(failed))["within_budget"] is False and lowering_guard(str(model)) is None
    rows = [
        make_row("onnxruntime", "fp32", "64x64", mean_iou=0.90, latency_ms_median=4.0, model=str(model)),
        make_row("onnxruntime", "int8", "64x64", mean_iou=0.899, latency_ms_median=1.0, model=str(failed)),
        make_row("onnxruntime", "fp16", "64x64", mean_iou=0.897, latency_ms_median=3.0, model="m/model.fp16.onnx"),
        make_row("openvino", "bf16", "64x64", mean_iou=0.893, latency_ms_median=2.0, model=str(model)),
    ]
    result = DemoResult(ReportResult(tmp_path / "report", rows, {}, {}), {}, {"total": 1, "train": 1, "report": 0},
                        {"threads": 1, "how": "--threads"})
    (nxt,) = [s for s in closing_text(result).splitlines() if s.startswith("next:")]
    assert "m/model.fp16.onnx" in nxt and "within 0.5 mean IoU point" in nxt  # not the failed INT8, not -0.7 BF16
    assert DemoConfig().max_drop == 0.5


def test_measure_threads_picks_the_faster_count():
    import time as _time

    import torch

    from fcn_deploy.training.device import measure_threads

    def work():  # slower with more threads, whatever the machine: sleeps in proportion to the count
        _time.sleep(0.002 * torch.get_num_threads())

    before = torch.get_num_threads()
    try:
        best, medians = measure_threads(work, (1, 2), rounds=3)
        assert best == 1 and medians[1] < medians[2] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
