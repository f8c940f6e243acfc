"""The one-command demo: synthetic data -> train a narrow FCN-8s on the CPU -> export -> FP16 and INT8 -> report.

Sized to finish within 10 minutes on 2 CPU cores: a width-1/8 FCN-8s on 64x64 synthetic shapes, training stopped
by a time budget if it runs long (the machine may be shared), and calibration on a few dozen images. TensorRT
rows are built and measured when TensorRT and a GPU are present, and skipped with the reason otherwise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.report.inputs import ReportConfig, check_output_dir
from fcn_deploy.report.run import ReportResult, build_report
from fcn_deploy.report.write import markdown_table


@dataclass(frozen=True)
class DemoConfig:
    output: Path = Path("fcn-deploy-demo")
    epochs: int = 200  # the training issue's synthetic recipe; `train_minutes` cuts it short on a slow machine
    train_minutes: float = 5.0  # training stops after the epoch that crosses this budget
    width: float = 0.125
    num_classes: int = 4
    size: tuple[int, int] = (64, 64)
    train_images: int = 128
    val_images: int = 32
    calib_images: int = 32
    latency_s: float = 1.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.train_minutes <= 0:
            raise FcnDeployError("demo: --epochs must be >= 1 and the training budget > 0 minutes")


@dataclass(frozen=True)
class DemoResult:
    report: ReportResult
    train_summary: dict[str, Any]
    seconds: dict[str, float]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_demo(cfg: DemoConfig = DemoConfig(), echo: Callable[[str], None] | None = None) -> DemoResult:  # noqa: B008
    say = echo or _stderr
    out = Path(cfg.output)
    check_output_dir(out)
    from fcn_deploy.training.config import TrainConfig
    from fcn_deploy.training.trainer import train

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    say(f"== fcn-deploy demo -> {out}")
    say(f"== step 1/2: train FCN-8s (width {cfg.width:g}) on synthetic {cfg.size[0]}x{cfg.size[1]} shapes, "
        f"{cfg.num_classes} classes, up to {cfg.epochs} epochs or {cfg.train_minutes:g} min, on the {cfg.device}")
    # `length` is per split: the val split gets its own, smaller dataset through the report below.
    options = {"num_classes": cfg.num_classes, "size": list(cfg.size), "length": cfg.train_images}
    train_cfg = TrainConfig(
        variant="fcn8s", width=cfg.width, padding="same", dataset="synthetic", dataset_options=options,
        epochs=cfg.epochs, optimizer="adamw", val_every=1,  # a time-budget stop keeps the last epoch
    )
    summary = train(train_cfg, out / "train", device=cfg.device, max_minutes=cfg.train_minutes, echo=say)
    seconds["train"] = time.perf_counter() - t0
    if not summary.get("best_checkpoint"):
        raise FcnDeployError(f"demo: training wrote no best checkpoint in {out / 'train'}")
    say(f"   trained {summary['epochs_done']} epochs in {seconds['train']:.0f} s, best val mean IoU "
        f"{summary['best_mean_iou']:.3f}")

    t1 = time.perf_counter()
    say("== step 2/2: export to ONNX, lower to FP16 and INT8, evaluate every backend x precision, write the report")
    report = build_report(
        ReportConfig(
            output=out / "report", dataset="synthetic", checkpoint=Path(summary["best_checkpoint"]),
            dataset_options={"num_classes": cfg.num_classes, "size": list(cfg.size), "length": cfg.val_images},
            sizes=(tuple(cfg.size),), calib_images=cfg.calib_images, calib_method="minmax",
            latency_warmup_s=0.2, latency_duration_s=cfg.latency_s, device=cfg.device,
        ),
        echo=say,
    )
    seconds["report"] = time.perf_counter() - t1
    seconds["total"] = time.perf_counter() - t0
    return DemoResult(report, summary, seconds)


def closing_text(result: DemoResult) -> str:
    out = result.report.output
    s = result.seconds
    return "\n".join([
        markdown_table(result.report.rows),
        "",
        f"demo finished in {s['total']:.0f} s (training {s['train']:.0f} s, export + lowering + report "
        f"{s['report']:.0f} s)",
        f"  report:     {out / 'report.md'}  (also report.json, report.csv)",
        f"  plots:      {out / 'pareto.png'}, {out / 'per_class.png'}",
        f"  samples:    {out / 'samples'}/",
        f"  models:     {out / 'models'}/  (model.onnx, model.fp16.onnx, model.int8.onnx)",
        f"  checkpoint: {result.train_summary['best_checkpoint']}",
        f"next: fcn-deploy infer {out / 'models' / 'model.int8.onnx'} --source IMAGE_OR_VIDEO --output out.mp4",
    ])
