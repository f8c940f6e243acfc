"""The one-command demo: synthetic data -> train a narrow FCN-8s on the CPU -> export -> FP16 and INT8 -> report.

Sized to finish within 10 minutes on 2 CPU cores: a width-1/8 FCN-8s on 64x64 synthetic shapes, training stopped
by a time budget if it runs long (the machine may be shared), and calibration on a few dozen images. The INT8
model is `quantize --auto`'s measured plan within `max_drop` mean IoU points (its guard judged it on calibration
images held out from the ranges), and the closing `next:` line never names a model that failed its budget.
TensorRT rows are built and measured when TensorRT and a GPU are present, and skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcn_deploy.core.atomic import sha256_file, write_text
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.report.inputs import ReportConfig, check_output_dir
from fcn_deploy.report.run import ReportResult, build_report
from fcn_deploy.report.write import markdown_table

STATE = "demo.json"  # what the demo in a folder was run with, written once its training finished
PARTS = ("train", "report", STATE)  # everything a demo writes in its folder


@dataclass(frozen=True)
class DemoConfig:
    output: Path = Path("fcn-deploy-demo")
    epochs: int = 200  # the training issue's synthetic recipe; `train_minutes` cuts it short on a slow machine
    train_minutes: float = 5.0  # training stops after the epoch that crosses this budget
    width: float = 0.125
    num_classes: int = 4
    size: tuple[int, int] = (64, 64)
    images: int | None = None  # images per split; None: the synthetic dataset's own split sizes (128 train, 32 val)
    calib_images: int = 64  # --auto holds out 32 of them to judge the plan (the rest fit the ranges)
    max_drop: float = 0.5  # INT8 budget (--auto, the guard and the `next:` pick), mean IoU points
    latency_s: float = 1.0
    device: str = "cpu"
    threads: int | None = None  # PyTorch CPU threads; None: measured (1 vs every usable core) on training steps
    fresh: bool = False  # retrain even when the folder holds a finished demo with these options

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.train_minutes <= 0:
            raise FcnDeployError("demo: --epochs must be >= 1 and the training budget > 0 minutes")
        if self.threads is not None and self.threads < 1:
            raise FcnDeployError(f"demo: --threads must be >= 1, got {self.threads}")

    def record(self) -> dict[str, Any]:
        """The options that decide what training makes (threads and --fresh do not)."""
        return {"epochs": self.epochs, "train_minutes": self.train_minutes, "width": self.width,
                "num_classes": self.num_classes, "size": list(self.size), "images": self.images,
                "device": self.device}  # fmt: skip

    def dataset_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_classes": self.num_classes, "size": list(self.size)}
        if self.images is not None:
            options["length"] = self.images
        return options


@dataclass(frozen=True)
class DemoResult:
    report: ReportResult
    train_summary: dict[str, Any]
    seconds: dict[str, float]
    threads: dict[str, Any]
    reused_training: bool = False


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def previous_demo(out: Path, cfg: DemoConfig) -> tuple[dict | None, str]:
    """The state of a finished demo in `out` whose training can be reused, or None and why not."""
    state_file = out / STATE
    if not state_file.is_file():
        return None, "no finished demo there"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None, f"{state_file} is unreadable"
    if state.get("options") != json.loads(json.dumps(cfg.record())):
        changed = sorted(k for k, v in cfg.record().items() if (state.get("options") or {}).get(k) != v)
        return None, f"options changed ({', '.join(changed) or 'format'})"
    ckpt = out / "train" / "best.pt"
    if not ckpt.is_file() or sha256_file(ckpt) != state.get("checkpoint_sha256"):
        return None, f"{ckpt} is missing or changed"
    return state, ""


def prepare_folder(out: Path, cfg: DemoConfig, say: Callable[[str], None]) -> dict | None:
    """Reuse a finished demo's training with the same options, or start clean, saying which. A folder holding
    anything a demo does not write is refused, so the demo never deletes a user's files."""
    check_output_dir(out)
    if not out.is_dir() or not any(out.iterdir()):
        return None
    foreign = sorted(p.name for p in out.iterdir() if p.name not in PARTS)
    if foreign:
        raise FcnDeployError(
            f"--output {out}: holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which a demo "
            "does not write; give an empty or new folder (a demo folder is reused or cleaned, never another one)"
        )
    state, why = (None, "--fresh") if cfg.fresh else previous_demo(out, cfg)
    if state is not None:
        say(f"   reusing {out / 'train' / 'best.pt'}: trained by a demo with these options (--fresh retrains); "
            "models are reused where their parent and options still match")  # fmt: skip
        samples = out / "report" / "samples"
        if samples.is_dir():
            shutil.rmtree(samples)  # sample names depend on the picks: never leave an older run's beside them
        drop_stale_models(out, cfg, say)
        return state
    say(f"   starting clean: removing the previous demo's train/ and report/ in {out} ({why})")
    for name in PARTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return None


def drop_stale_models(out: Path, cfg: DemoConfig, say: Callable[[str], None]) -> None:
    """models/ whose FP32 export the chain would not reuse (another export of this checkpoint, e.g. after an
    upgrade) goes as a whole: its lowered models and calibration caches belong to that other export."""
    from fcn_deploy.chain.onnx import OnnxFromCheckpoint
    from fcn_deploy.report.inputs import card_of_checkpoint
    from fcn_deploy.report.models import export_options

    models, ckpt = out / "report" / "models", out / "train" / "best.pt"
    if not models.is_dir():
        return
    step = OnnxFromCheckpoint(ckpt, models / "model.onnx", export_options(card_of_checkpoint(ckpt), [cfg.size]))
    if not step.reusable():
        say(f"   removing {models}: not exported from this checkpoint with these options (rebuilt below)")
        shutil.rmtree(models)


def choose_threads(cfg: DemoConfig, train_cfg: Any, num_classes: int) -> dict[str, Any]:
    """--threads as given, or measured: a few forward+backward steps on a training-sized batch with 1 thread and
    with every usable core, interleaved (fcn_deploy.training.device.measure_threads)."""
    from fcn_deploy.core.environment import usable_cores
    from fcn_deploy.training.device import measure_threads, set_measured_threads

    if cfg.threads is not None:
        set_measured_threads(cfg.threads)
        return {"threads": cfg.threads, "how": "--threads"}
    if cfg.device != "cpu" or usable_cores() == 1:
        return {"threads": None, "how": "not measured (one core or not the CPU)"}
    import torch

    from fcn_deploy.training.fcn import build_model

    torch.manual_seed(0)
    model = build_model(train_cfg.model_config(num_classes))
    x = torch.randn(train_cfg.batch_size, 3, *cfg.size)
    y = torch.randint(0, num_classes, (train_cfg.batch_size, *cfg.size))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()

    best, medians = measure_threads(step)
    set_measured_threads(best)
    return {"threads": best, "how": "measured", "median_step_s": {str(k): round(v, 4) for k, v in medians.items()}}


def run_demo(cfg: DemoConfig = DemoConfig(), echo: Callable[[str], None] | None = None) -> DemoResult:  # noqa: B008
    say = echo or _stderr
    out = Path(cfg.output)
    from fcn_deploy.training.config import TrainConfig
    from fcn_deploy.training.trainer import train

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    say(f"== fcn-deploy demo -> {out}")
    state = prepare_folder(out, cfg, say)
    options = cfg.dataset_options()
    train_cfg = TrainConfig(
        variant="fcn8s", width=cfg.width, padding="same", dataset="synthetic", dataset_options=options,
        epochs=cfg.epochs, optimizer="adamw", val_every=1,  # a time-budget stop keeps the last epoch
    )
    reused = state is not None
    threads = choose_threads(cfg, train_cfg, cfg.num_classes)
    if threads["how"] == "measured":
        times = ", ".join(f"{k} thread(s) {v * 1000:.0f} ms" for k, v in threads["median_step_s"].items())
        say(f"   PyTorch threads: {threads['threads']} (median training step: {times}; --threads to choose)")
    if state is None:
        say(f"== step 1/2: train FCN-8s (width {cfg.width:g}) on synthetic {cfg.size[0]}x{cfg.size[1]} shapes, "
            f"{cfg.num_classes} classes, up to {cfg.epochs} epochs or {cfg.train_minutes:g} min, on the "
            f"{cfg.device}")  # fmt: skip
        summary = train(train_cfg, out / "train", device=cfg.device, threads=threads["threads"],
                        max_minutes=cfg.train_minutes, echo=say)  # fmt: skip
        if not summary.get("best_checkpoint") or not (out / "train" / "best.pt").is_file():
            raise FcnDeployError(f"demo: training wrote no best checkpoint in {out / 'train'}")
        state = {"options": cfg.record(), "checkpoint_sha256": sha256_file(out / "train" / "best.pt"),
                 "train_summary": summary, "threads": threads}  # fmt: skip
        write_text(out / STATE, json.dumps(state, indent=2, default=str) + "\n")
    else:
        say("== step 1/2: training reused")
    summary = state["train_summary"]
    seconds["train"] = time.perf_counter() - t0
    say(f"   trained {summary['epochs_done']} epochs, best val mean IoU {summary['best_mean_iou']:.3f}")

    t1 = time.perf_counter()
    say(f"== step 2/2: export to ONNX, lower to FP16 and INT8 (the --auto plan within {cfg.max_drop:g} mean IoU "
        "points), evaluate every backend x precision, write the report")
    report = build_report(
        ReportConfig(
            output=out / "report", dataset="synthetic", checkpoint=out / "train" / "best.pt",
            dataset_options=options, sizes=(tuple(cfg.size),), calib_images=cfg.calib_images,
            calib_method="minmax", auto=True, max_drop=cfg.max_drop, latency_warmup_s=0.2,
            latency_duration_s=cfg.latency_s, device=cfg.device,
        ),
        echo=say,
    )
    seconds["report"] = time.perf_counter() - t1
    seconds["total"] = time.perf_counter() - t0
    return DemoResult(report, summary, seconds, threads, reused)


def lowering_guard(model: str | None) -> dict[str, Any] | None:
    """The INT8 guard's record (calibration.guard) of a row's model: from the ONNX card, or from an engine's
    manifest (the card of the ONNX it was built from); None for a model no INT8 lowering made."""
    from fcn_deploy.core.card import ModelCard
    from fcn_deploy.core.onnx_io import load_onnx

    if not model:
        return None
    try:
        if model.endswith(".onnx"):
            provenance = ModelCard.from_onnx(load_onnx(Path(model)), model).provenance
        elif model.endswith(".engine"):
            from fcn_deploy.engine.manifest import read_manifest

            provenance = read_manifest(model).model_card.get("provenance") or {}
        else:
            return None
    except FcnDeployError:
        return None
    return (provenance.get("lowering") or {}).get("guard")


def closing_text(result: DemoResult, budget: float = DemoConfig.max_drop) -> str:
    """budget: mean IoU points the `next:` model may lose against FP32 on the report's images; a model whose
    INT8 lowering failed its own budget (its guard) is never named."""
    from fcn_deploy.report.write import best_within_budget

    out = result.report.output
    s = result.seconds
    threads = result.threads
    how = threads["how"] if threads["threads"] is None else f"{threads['threads']} ({threads['how']})"
    passed = [r for r in result.report.rows if (lowering_guard(r.get("model")) or {}).get("within_budget") is not False]
    best = best_within_budget(passed, budget / 100)
    if best is not None:
        pick = (f"next: fcn-deploy infer {best['model']} --source IMAGE_OR_VIDEO --output out.mp4   "
                f"(fastest model within {budget:g} mean IoU point of FP32: {best['backend']} "
                f"{best['precision']})")  # fmt: skip
    else:
        pick = f"next: no lowered model stayed within {budget:g} mean IoU point of FP32; see the report"
    training = "reused" if result.reused_training else f"{s['train']:.0f} s"
    return "\n".join([
        markdown_table(result.report.rows),
        "",
        f"demo finished in {s['total']:.0f} s (training {training}, export + lowering + report {s['report']:.0f} s)",
        f"  PyTorch threads: {how}",
        f"  report:     {out / 'report.md'}  (also report.json, report.csv)",
        f"  plots:      {out / 'pareto.png'}, {out / 'per_class.png'}",
        f"  samples:    {out / 'samples'}/",
        f"  models:     {out / 'models'}/  (model.onnx, model.fp16.onnx, model.int8-auto.onnx)",
        f"  checkpoint: {out.parent / 'train' / 'best.pt'}",
        pick,
    ])
