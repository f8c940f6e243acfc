"""Small artifacts the reliability suites build once per module: a seeded tiny FCN-8s (checkpoint + ONNX) and a
grey-ramp video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from fcn_deploy.cli import main
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.model_config import ModelConfig
from fcn_deploy.training.checkpoint import save_checkpoint
from fcn_deploy.training.fcn import build_model


def tiny_fcn8s(folder: Path, hw: int, *export_args: str) -> torch.nn.Module:
    """folder/ck.pt (a seeded width-1/16 FCN-8s, 3 classes, epoch 1) and folder/m.onnx exported from it at HWxHW
    (`export_args` appended to the export command); returns the model."""
    torch.manual_seed(0)
    model = build_model(ModelConfig("fcn8s", 3, 0.0625, "same"))
    card = ModelCard.default("fcn8s", 3, width=0.0625, padding="same", training_resolution=(hw, hw))
    save_checkpoint(folder / "ck.pt", model, card, epoch=1)
    r = CliRunner().invoke(main, ["export", "--checkpoint", str(folder / "ck.pt"), "-o", str(folder / "m.onnx"),
                                  "--no-simplify", "--check-sizes", f"{hw}x{hw}", "--input-size", f"{hw}x{hw}",
                                  *export_args])  # fmt: skip
    assert r.exit_code == 0, r.output
    return model


def grey_video(path: Path, hw: int, frames: int, step: int) -> None:
    """An HWxHW mp4 at 10 fps whose frame i is uniformly grey at level step * i."""
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (hw, hw))
    for i in range(frames):
        w.write(np.full((hw, hw, 3), step * i, np.uint8))
    w.release()
