"""`fcn-deploy export` end to end: a real checkpoint, the untrained warning, and one-line errors that leave no file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fcn_deploy.cli import main
from fcn_deploy.core.atomic import sha256_file
from fcn_deploy.core.card import ModelCard, Normalization
from fcn_deploy.core.model_config import ModelConfig
from fcn_deploy.core.onnx_io import load_onnx
from fcn_deploy.training.checkpoint import save_checkpoint
from fcn_deploy.training.fcn import build_model

SMALL = ["--width", "0.0625", "--num-classes", "3", "--input-size", "40x56"]


def run(*args: str):
    return CliRunner().invoke(main, ["export", *args])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    config = ModelConfig("fcn16s", 3, 0.0625, "same")
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.score_fr.weight.normal_(std=0.05)
        model.score_pool4.weight.normal_(std=0.05)
    card = ModelCard.default(
        "fcn16s", 3, class_names=("road", "car", "sky"), width=0.0625, padding="same",
        normalization=Normalization.preset("caffe"), training_dataset="synthetic", training_resolution=(40, 56),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("ckpt") / "fcn16s.pt"
    save_checkpoint(path, model, card, epoch=3)
    return path


def test_export_from_checkpoint_carries_its_card(checkpoint, tmp_path) -> None:
    out = tmp_path / "deploy" / "model.onnx"
    result = run("--checkpoint", str(checkpoint), "--output", str(out), "--head", "labels+probs")
    assert result.exit_code == 0, result.output
    assert "UNTRAINED" not in result.stderr
    assert result.stdout.count("ONNX Runtime vs PyTorch") == 3 and "FAILED" not in result.stdout
    card = ModelCard.from_onnx(load_onnx(out), str(out))
    assert card.class_names == ("road", "car", "sky") and card.variant == "fcn16s" and card.padding == "same"
    assert card.normalization.channel_order == "BGR" and card.training_dataset == "synthetic"
    assert card.checkpoint_sha256 == sha256_file(checkpoint)
    assert card.opt_shape == (40, 56) and [o.name for o in card.outputs] == ["labels", "probs"]


def test_untrained_export_warns_loudly(tmp_path) -> None:
    out = tmp_path / "m.onnx"
    result = run(*SMALL, "--output", str(out), "--no-simplify", "--check-sizes", "40x56,21x33,9x9")
    assert result.exit_code == 0, result.output
    assert "UNTRAINED" in result.stderr and out.is_file()
    assert "21x33 (batch 1)" in result.stdout and "9x9 (batch 2)" in result.stdout
    assert not ModelCard.from_onnx(load_onnx(out)).provenance["simplified"]


def test_json_report_of_a_static_export(tmp_path) -> None:
    out = tmp_path / "static.onnx"
    result = run(*SMALL, "--static", "32x48", "--head", "logits", "--output", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["output"] == str(out) and report["sha256"] == sha256_file(out) and report["opset"] == 17
    assert report["outputs"] == [{"name": "logits", "kind": "logits"}]
    assert [(p["size"], p["batch"], p["passed"]) for p in report["parity"]] == [([32, 48], 1, True)]


def _unsafe_pickle(path: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": Payload()}, path)


def bad_cases(tmp: Path, checkpoint: Path) -> dict[str, tuple[list[str], str]]:
    empty = tmp / "empty.pt"
    empty.write_bytes(b"")
    truncated = tmp / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    evil = tmp / "evil.pt"
    _unsafe_pickle(evil, tmp / "pwned")
    blocker = tmp / "a_file"
    blocker.write_text("x")
    learned = tmp / "learned.pt"
    model = build_model(ModelConfig("fcn32s", 3, 0.0625, "same", learn_upsampling=True))
    save_checkpoint(learned, model, ModelCard.default("fcn32s", 3, width=0.0625, padding="same"))
    return {
        "variant": (["--checkpoint", str(checkpoint), "--variant", "fcn8s"], "--variant fcn8s (checkpoint: fcn16s)"),
        "unsafe": (["--checkpoint", str(evil)], "refused to load"),
        "empty": (["--checkpoint", str(empty)], "file is empty"),
        "truncated": (["--checkpoint", str(truncated)], "corrupt or truncated"),
        "static0": ([*SMALL, "--static", "0x0"], "height and width must be positive"),
        "opset": ([*SMALL, "--opset", "9"], "--opset 9"),
        "resize_learned": (["--checkpoint", str(learned), "--upsample", "resize"], "learn_upsampling"),
        "unwritable": ([*SMALL, "--output", str(blocker / "m.onnx")], "cannot write there"),
    }


@pytest.mark.parametrize(
    "case", ["variant", "unsafe", "empty", "truncated", "static0", "opset", "resize_learned", "unwritable"]
)
def test_bad_input_is_one_line_and_leaves_no_file(case, checkpoint, tmp_path) -> None:
    args, message = bad_cases(tmp_path, checkpoint)[case]
    out = tmp_path / "out.onnx"
    if "--output" not in args:
        args = [*args, "--output", str(out)]
    result = run(*args)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "pwned").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
