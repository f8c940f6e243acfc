"""The demo, reduced (1 epoch, 32x32 images, a handful of them): every stage runs for real and ends in a report."""

from __future__ import annotations

import json

from click.testing import CliRunner

from fcn_deploy.cli import main
from fcn_deploy.demo import DemoConfig, closing_text, run_demo


def test_reduced_demo_runs_end_to_end(tmp_path):
    lines: list[str] = []
    cfg = DemoConfig(output=tmp_path / "demo", epochs=1, width=0.0625, size=(32, 32), train_images=8,
                     val_images=3, calib_images=3, latency_s=0.05)
    result = run_demo(cfg, echo=lines.append)
    out = tmp_path / "demo"
    assert (out / "train" / "best.pt").is_file() and (out / "train" / "log.jsonl").is_file()
    report = out / "report"
    for name in ("report.md", "report.json", "report.csv", "pareto.png", "per_class.png", "models/model.onnx",
                 "models/model.fp16.onnx", "models/model.int8.onnx"):
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
