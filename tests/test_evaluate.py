"""`fcn-deploy evaluate` on every artifact of one tiny model (checkpoint, FP32 ONNX, INT8 ONNX), and the one
scoring convention: `quantize`'s summary and `evaluate` print the same mean IoU for the same model and images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fcn_deploy.cli import main

torch = pytest.importorskip("torch")

CLASSES = 4  # the synthetic dataset's default: background + disc, box, triangle
# 32 val images of 64x64 seen at 48x48: the summary must bring predictions up to the labels, as evaluate does.
EVAL = ["--dataset", "synthetic", "--split", "val", "--resize", "48x48", "--json"]


def cli(*args: object) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    from fcn_deploy.core.card import ModelCard
    from fcn_deploy.core.model_config import ModelConfig
    from fcn_deploy.training.checkpoint import save_checkpoint
    from fcn_deploy.training.fcn import build_model

    tmp = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    config = ModelConfig("fcn8s", CLASSES, width=0.0625, padding="same")
    save_checkpoint(tmp / "m.pt", build_model(config), ModelCard.from_config(config))
    cli("export", "--checkpoint", tmp / "m.pt", "-o", tmp / "m.onnx", "--input-size", "64x64",
        "--check-sizes", "64x64", "--no-simplify")  # fmt: skip
    # Held-out images of the summary = synthetic:val (the split beside the calibration one), at 48x48.
    summary = json.loads(cli("quantize", tmp / "m.onnx", "--int8", "--target", "onnxruntime",
                             "--calib-dataset", "synthetic:train", "--num-images", "4", "--eval-images", "32",
                             "--calib-shapes", "48x48", "--json"))  # fmt: skip
    return {"pt": tmp / "m.pt", "onnx": tmp / "m.onnx", "int8": tmp / "m.int8.onnx", "summary": summary}


def evaluate(model: Path) -> dict:
    return json.loads(cli("evaluate", model, *EVAL))


def test_evaluate_accepts_checkpoint_fp32_and_int8_onnx(artifacts):
    results = {kind: evaluate(artifacts[kind]) for kind in ("pt", "onnx", "int8")}
    for r in results.values():
        assert r["num_images"] == 32
        assert set(r["per_class_iou"]) == {"background", "disc", "box", "triangle"}
        assert 0.0 <= r["mean_iou"] <= 1.0
    # The checkpoint and its FP32 export are one model: the same score, to float noise.
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        assert results["onnx"][key] == pytest.approx(results["pt"][key], abs=1e-6)


def test_quantize_summary_and_evaluate_print_the_same_miou(artifacts):
    summary = artifacts["summary"]
    assert summary["eval_images"] == 32 and summary["eval_source"] == "synthetic:val"
    assert summary["miou_fp32"] == evaluate(artifacts["onnx"])["mean_iou"]
    assert summary["miou_lowered"] == evaluate(artifacts["int8"])["mean_iou"]


def test_evaluate_text_names_the_backend(artifacts):
    from fcn_deploy.runtime.cpu_auto import choose_cpu_backend

    out = cli("evaluate", artifacts["int8"], "--dataset", "synthetic")
    picked, _ = choose_cpu_backend(artifacts["int8"], None)  # an INT8 graph: OpenVINO where it is installed
    assert f"{picked})" in out and "mean_iou" in out and "triangle" in out


def test_evaluate_errors_are_one_line(artifacts, tmp_path):
    import numpy as np
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "classes.txt").write_text("sky\nground\n")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "masks" / "a.png")
    for args, fragment in (
        ([artifacts["onnx"], "--dataset", "folder", "--data-root", tmp_path], "has 2"),
        ([artifacts["onnx"]], "pass --dataset"),  # an untrained model names no dataset
        ([tmp_path / "none.onnx", "--dataset", "synthetic"], "no such model file"),
    ):
        result = CliRunner().invoke(main, ["evaluate", *map(str, args)])
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 1 and len(lines) == 1 and fragment in lines[0], result.output
