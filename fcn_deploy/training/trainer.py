"""The training loop: model, loss, optimiser, schedule, validation and checkpoints each epoch, and exact --resume.

Exact resume without pickling RNG objects: the data order and augmentation are seeded per (seed, epoch, item)
(fcn_deploy.training.data) and torch's global RNG (dropout) at the start of each epoch, so continuing from
`last.pt` (saved at the end of an epoch) replays exactly the epochs an uninterrupted run would have trained.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fcn_deploy.core.card import ModelCard, Normalization
from fcn_deploy.core.datasets import SegmentationDataset, build_dataset
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.training.checkpoint import load_checkpoint, save_checkpoint
from fcn_deploy.training.config import TrainConfig
from fcn_deploy.training.data import TrainSet, epoch_loader
from fcn_deploy.training.device import apply_threads, resolve_device
from fcn_deploy.training.evaluation import evaluate_model
from fcn_deploy.training.fcn import FCN, build_model
from fcn_deploy.training.loss import segmentation_loss
from fcn_deploy.training.optim import build_optimizer, build_scheduler
from fcn_deploy.training.run_dir import (
    BEST,
    LAST,
    LOG,
    read_log,
    refuse_existing_run,
    remove_stale_temps,
    resume_config,
    write_log,
)
from fcn_deploy.training.transfer import init_from, transfer_vgg16
from fcn_deploy.training.weights_io import torch_load


def build_card(
    cfg: TrainConfig, model: FCN, train_ds: SegmentationDataset, val_ds: SegmentationDataset
) -> ModelCard:
    """Classes, palette and ignore label from the dataset; normalisation and resolution from the config."""
    first_val = val_ds[0][0].shape[:2] if len(val_ds) else None
    train_res = cfg.crop or cfg.resize or tuple(train_ds[0][0].shape[:2])
    return ModelCard.from_config(
        model.config,
        class_names=train_ds.class_names,
        palette=train_ds.palette,
        normalization=Normalization.preset(cfg.normalization),
        ignore_index=train_ds.ignore_index,
        opt_shape=tuple(cfg.resize or first_val or train_res),
        training_dataset=train_ds.name,
        training_resolution=tuple(train_res),
        provenance={"train_config": cfg.to_dict()},
    )


def _build_model(cfg: TrainConfig, num_classes: int) -> FCN:
    model = build_model(cfg.model_config(num_classes))
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
    if not resume:
        refuse_existing_run(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    progress = sys.stderr.isatty() if progress is None else progress
    apply_threads(threads)
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
        loader = epoch_loader(train_set, epoch, workers, pin_memory=dev.type == "cuda")
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
        write_log(out / LOG, log)
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
