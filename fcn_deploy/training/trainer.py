"""The training loop: data, loss, optimiser, schedule, validation, checkpoints and an exact --resume.

Exact resume without pickling RNG objects: every random draw is a pure function of (seed, epoch, item). The
shuffle order and torch's global RNG (dropout) are seeded at the start of each epoch and each item's
augmentation has its own numpy generator, so continuing from `last.pt` (saved at the end of an epoch) replays
exactly the epochs an uninterrupted run would have trained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fcn_deploy.core.atomic import write_text
from fcn_deploy.core.card import ModelCard, Normalization
from fcn_deploy.core.datasets import SegmentationDataset, build_dataset
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.preprocess import normalize, resize_image, resize_labels, to_rgb
from fcn_deploy.training.checkpoint import load_checkpoint, save_checkpoint
from fcn_deploy.training.config import ModelConfig
from fcn_deploy.training.evaluation import evaluate_model
from fcn_deploy.training.fcn import FCN, build_model
from fcn_deploy.training.loss import REDUCTIONS, segmentation_loss
from fcn_deploy.training.optim import (
    OPTIMIZERS,
    SCHEDULES,
    build_optimizer,
    build_scheduler,
    default_lr,
    default_weight_decay,
)
from fcn_deploy.training.transfer import init_from, torch_load, transfer_vgg16
from fcn_deploy.training.transforms import TrainTransform

LAST, BEST, LOG = "last.pt", "best.pt", "log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (stored in every checkpoint; --resume reuses it)."""

    variant: str = "fcn8s"
    width: float = 1.0
    padding: str = "same"
    batch_norm: bool = False
    dataset: str = "synthetic"
    data_root: str | None = None
    dataset_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    epochs: int = 200
    batch_size: int = 8
    crop: tuple[int, int] | None = None  # training crop; None = whole (resized) images
    resize: tuple[int, int] | None = None  # network resolution for training and validation; None = native
    scale_range: tuple[float, float] = (1.0, 1.0)
    hflip: bool = True
    optimizer: str = "adamw"
    lr: float | None = None  # None = the optimiser's default (fcn_deploy.training.optim.default_lr)
    weight_decay: float | None = None
    momentum: float = 0.99
    schedule: str = "cosine"
    loss_reduction: str = "mean"
    accumulate: int = 1
    normalization: str = "imagenet"
    backbone_weights: str | None = None
    init_from: str | None = None
    seed: int = 1337
    val_every: int = 1
    amp: bool = True  # mixed precision; only ever used on CUDA

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.accumulate >= 1, f"--accumulate must be >= 1, got {self.accumulate}"),
            (self.val_every >= 1, f"--val-every must be >= 1, got {self.val_every}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
            (self.loss_reduction in REDUCTIONS, f"--loss-reduction must be one of {', '.join(REDUCTIONS)}"),
            (
                0 < self.scale_range[0] <= self.scale_range[1],
                f"--scale-range {self.scale_range}: need 0 < LO <= HI",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise FcnDeployError(message)
        Normalization.preset(self.normalization)  # one-line error for an unknown name

    @property
    def resolved_lr(self) -> float:
        return (
            self.lr if self.lr is not None else default_lr(self.optimizer, self.variant, self.loss_reduction)
        )

    @property
    def resolved_weight_decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else default_weight_decay(self.optimizer)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "checkpoint") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            kw = {k: v for k, v in d.items() if k in known}
            for key in ("crop", "resize", "scale_range"):
                if kw.get(key) is not None:
                    kw[key] = tuple(kw[key])
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise FcnDeployError(
                f"{source}: malformed train_config ({e}); start a new run without --resume"
            ) from None


class TrainSet(Dataset):
    """A numpy dataset as torch tensors: optional resize, augmentation, then the one normalisation."""

    def __init__(self, ds: SegmentationDataset, cfg: TrainConfig, norm: Normalization) -> None:
        self.ds, self.cfg, self.norm = ds, cfg, norm
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = self.ds[i]
        image = to_rgb(image)
        if self.cfg.resize is not None:
            image, labels = resize_image(image, self.cfg.resize), resize_labels(labels, self.cfg.resize)
        crop = self.cfg.crop or image.shape[:2]
        transform = TrainTransform(tuple(crop), self.cfg.scale_range, self.cfg.hflip, self.ds.ignore_index)
        rng = np.random.default_rng([self.cfg.seed, self.epoch, i])
        image, labels = transform(image, labels, rng)
        x = torch.from_numpy(normalize(image, self.norm))
        return x, torch.from_numpy(labels.astype(np.int64))


def _collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {tuple(x.shape) for x, _ in batch}
    if len(shapes) > 1:
        raise FcnDeployError(
            f"training images of different sizes {sorted(shapes)} in one batch; pass --crop HxW (or --resize HxW), "
            "or --batch-size 1"
        )
    return torch.stack([x for x, _ in batch]), torch.stack([y for _, y in batch])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FcnDeployError(f"--device {name}: no CUDA device is visible to PyTorch here; use --device cpu")
    return torch.device(name)


def auto_threads() -> int | None:
    """1 thread when other jobs already keep every core busy: PyTorch's threads then wait on each other at every
    parallel region (measured 4-5x slower than one thread on a loaded 2-core machine). Else PyTorch's default."""
    cores = os.cpu_count() or 1
    return 1 if os.getloadavg()[0] >= cores else None


def build_card(
    cfg: TrainConfig, model: FCN, train_ds: SegmentationDataset, val_ds: SegmentationDataset
) -> ModelCard:
    """Classes, palette and ignore label from the dataset; normalisation and resolution from the config."""
    first_val = val_ds[0][0].shape[:2] if len(val_ds) else None
    train_res = cfg.crop or cfg.resize or tuple(train_ds[0][0].shape[:2])
    return ModelCard(
        variant=cfg.variant,
        num_classes=model.config.num_classes,
        class_names=train_ds.class_names,
        palette=train_ds.palette,
        normalization=Normalization.preset(cfg.normalization),
        width=cfg.width,
        padding=cfg.padding,
        batch_norm=cfg.batch_norm,
        ignore_index=train_ds.ignore_index,
        opt_shape=tuple(cfg.resize or first_val or train_res),
        training_dataset=train_ds.name,
        training_resolution=tuple(train_res),
        provenance={"train_config": cfg.to_dict()},
    )


def remove_stale_temps(output: Path) -> list[Path]:
    """A SIGKILL during an atomic write can leave its temp file (never the destination): clean ours up."""
    stale = [p for name in (LAST, BEST, LOG) for p in output.glob(f".{name}.*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def read_log(path: Path, upto_epoch: int) -> list[dict]:
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            if entry.get("epoch", 0) <= upto_epoch:
                entries.append(entry)
    return entries


def resume_config(output: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and checkpoint of the run in `output` (for --resume)."""
    last = Path(output) / LAST
    if not last.is_file():
        raise FcnDeployError(
            f"{last}: nothing to resume (no last.pt); drop --resume to start a new run there"
        )
    ckpt = load_checkpoint(last)
    if "train_config" not in ckpt or "optimizer" not in ckpt:
        raise FcnDeployError(
            f"{last}: holds no training state (not written by `fcn-deploy train`); drop --resume"
        )
    return TrainConfig.from_dict(ckpt["train_config"], str(last)), ckpt


def _build_model(cfg: TrainConfig, num_classes: int) -> FCN:
    model = build_model(ModelConfig(cfg.variant, num_classes, cfg.width, cfg.padding, cfg.batch_norm))
    if cfg.backbone_weights:
        transfer_vgg16(model, torch_load(cfg.backbone_weights), source=cfg.backbone_weights)
    if cfg.init_from:
        src = load_checkpoint(cfg.init_from)
        from_variant = src.get("model_config", {}).get("variant", "?")
        init_from(model, src["state_dict"], from_variant, source=cfg.init_from)
    return model


def train(
    cfg: TrainConfig,
    output: str | Path,
    resume: bool = False,
    device: str = "auto",
    workers: int = 0,
    threads: int | None = None,
    max_minutes: float | None = None,
    progress: bool | None = None,
    echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> dict[str, Any]:
    """Train, writing OUTPUT/last.pt every epoch, OUTPUT/best.pt on a better val mean IoU and OUTPUT/log.jsonl.

    With `resume`, `cfg` must be the stored one (see resume_config) and training continues after the last
    completed epoch. Returns the summary (also the last log line's content).
    """
    started = time.monotonic()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    progress = sys.stderr.isatty() if progress is None else progress
    threads = threads if threads is not None else auto_threads()
    if threads is not None:
        if threads < 1:
            raise FcnDeployError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    use_amp = cfg.amp and dev.type == "cuda"

    opts = dict(cfg.dataset_options)
    train_ds = build_dataset(cfg.dataset, cfg.data_root, cfg.train_split, **opts)
    val_ds = build_dataset(cfg.dataset, cfg.data_root, cfg.val_split, **opts)
    norm = Normalization.preset(cfg.normalization)

    ckpt = resume_config(out)[1] if resume else None
    torch.manual_seed(cfg.seed)  # the initial weights
    model = _build_model(
        cfg if ckpt is None else dataclasses.replace(cfg, backbone_weights=None, init_from=None),
        train_ds.num_classes,
    )
    card = build_card(cfg, model, train_ds, val_ds)
    model.to(dev)
    optimizer = build_optimizer(
        cfg.optimizer, model, cfg.resolved_lr, cfg.resolved_weight_decay, cfg.momentum
    )
    batches = math.ceil(len(train_ds) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches / cfg.accumulate)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best_miou, best_epoch = 1, -1.0, 0
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch = int(ckpt["epoch"]) + 1
        best_miou, best_epoch = float(ckpt["best_miou"]), int(ckpt["best_epoch"])
        echo(f"resuming {out / LAST} after epoch {start_epoch - 1} (best val mean IoU {best_miou:.4f})")
    log = read_log(out / LOG, start_epoch - 1)

    train_set = TrainSet(train_ds, cfg, norm)
    stopped_early = False
    from tqdm import tqdm

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.monotonic()
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout
        train_set.epoch = epoch
        shuffle = torch.Generator().manual_seed(cfg.seed * 100_019 + epoch)
        loader = DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=shuffle,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=dev.type == "cuda",
        )
        model.train()
        optimizer.zero_grad(set_to_none=True)
        lr = optimizer.param_groups[0]["lr"]  # logged: the weights' learning rate at the epoch's first step
        loss_sum, seen = 0.0, 0
        bar = tqdm(
            loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, file=sys.stderr, disable=not progress
        )
        for b, (x, y) in enumerate(bar, start=1):
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                loss = segmentation_loss(model(x), y, train_ds.ignore_index, cfg.loss_reduction)
            if not torch.isfinite(loss):
                raise FcnDeployError(
                    f"loss became {loss.item()} at epoch {epoch}, batch {b}; lower --lr (now {cfg.resolved_lr:g}) "
                    "or use --loss-reduction mean"
                )
            scaler.scale(loss / cfg.accumulate).backward()
            if b % cfg.accumulate == 0 or b == batches:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            loss_sum += loss.item() * x.shape[0]
            seen += x.shape[0]
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        bar.close()
        train_seconds = time.monotonic() - t0

        val = None
        if epoch % cfg.val_every == 0 or epoch == cfg.epochs:
            val = evaluate_model(model, val_ds, norm, dev, cfg.resize, progress)
        improved = val is not None and val["mean_iou"] > best_miou
        if improved:
            best_miou, best_epoch = val["mean_iou"], epoch
        state = {
            "train_config": cfg.to_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if use_amp else None,
            "epoch": epoch,
            "best_miou": best_miou,
            "best_epoch": best_epoch,
        }
        if improved:
            best_card = card.replace(
                provenance={**card.provenance, "epoch": epoch, "val_metrics": _brief(val)}
            )
            save_checkpoint(out / BEST, model, best_card, **state, val_metrics=val)
        save_checkpoint(
            out / LAST, model, card.replace(provenance={**card.provenance, "epoch": epoch}), **state
        )
        entry = {
            "epoch": epoch,
            "loss": loss_sum / max(seen, 1),
            "lr": lr,
            "train_seconds": round(train_seconds, 3),
            "seconds": round(time.monotonic() - t0, 3),
            "val": val,
            "best_mean_iou": best_miou if best_epoch else None,
            "best_epoch": best_epoch or None,
        }
        log.append(entry)
        write_text(out / LOG, "".join(json.dumps(e) + "\n" for e in log))
        miou = f"  val mIoU {val['mean_iou']:.4f}" if val else ""
        echo(
            f"epoch {epoch}/{cfg.epochs}  loss {entry['loss']:.4f}  lr {entry['lr']:.3g}{miou}  {entry['seconds']:.1f}s"
        )
        if max_minutes is not None and time.monotonic() - started > max_minutes * 60 and epoch < cfg.epochs:
            stopped_early = True
            echo(
                f"stopping after epoch {epoch}: --max-minutes {max_minutes:g} reached; continue with --resume"
            )
            break

    return {
        "output": str(out),
        "epochs_done": log[-1]["epoch"] if log else start_epoch - 1,
        "epochs": cfg.epochs,
        "best_mean_iou": best_miou if best_epoch else None,
        "best_epoch": best_epoch or None,
        "best_checkpoint": str(out / BEST) if best_epoch else None,
        "seconds": round(time.monotonic() - started, 2),
        "stopped_early": stopped_early,
    }


def _brief(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou") if k in metrics}
