"""The training loop: model, loss, optimiser, schedule, validation and checkpoints each epoch, and exact --resume.

Exact resume without pickling RNG objects: the data order, the augmentation and the dropout masks are seeded per
(seed, epoch, item) (fcn_deploy.training.data), so continuing from `last.pt` (saved at the end of an epoch)
replays exactly the epochs an uninterrupted run would have trained.

Data-parallel (fcn_deploy.training.distributed): under torchrun each of K processes takes its slice of every
global batch of the one-process order, its loss is its share of the global batch's loss (the denominator is
summed over the processes), DistributedDataParallel averages the gradients, and validation scores disjoint
shards whose confusion matrices are summed: K processes train and score like one. Rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import functools
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
from fcn_deploy.training.data import TrainSet, epoch_loader, sample_seed
from fcn_deploy.training.device import apply_threads
from fcn_deploy.training.distributed import DEFAULT_TIMEOUT_S, Dist, cpu_threads, setup
from fcn_deploy.training.fcn import FCN, build_model
from fcn_deploy.training.launch import env_world
from fcn_deploy.training.optim import build_optimizer, build_scheduler
from fcn_deploy.training.run_dir import (
    BEST,
    LAST,
    LOG,
    read_log,
    refuse_existing_run,
    remove_stale_temps,
    restore_log,
    resume_config,
    write_log,
)
from fcn_deploy.training.steps import brief_metrics, parallel_model, train_step, validate
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
    dist_backend: str = "auto",
    dist_timeout: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Train, writing OUTPUT/last.pt every epoch, OUTPUT/best.pt on a better val mean IoU and OUTPUT/log.jsonl.

    With `resume`, `cfg` must be the stored one (see resume_config) and training continues after the last
    completed epoch. Returns the summary (also the last log line's content). Under a launcher that sets
    WORLD_SIZE > 1 (torchrun) this process is one rank of a data-parallel run and cfg.batch_size is the global
    batch; only rank 0 prints and writes.
    """
    started = time.monotonic()
    out = Path(output)
    world = env_world()[1]
    if cfg.batch_size % world:
        raise FcnDeployError(
            f"--batch-size {cfg.batch_size} is the global batch and does not divide among {world} processes; "
            f"pass a multiple of {world}"
        )
    dist, dev = setup(device, dist_backend, dist_timeout)
    try:
        return _train(cfg, out, resume, dist, dev, workers, threads, max_minutes, progress, echo, started)
    finally:
        dist.close()


def _train(
    cfg: TrainConfig,
    out: Path,
    resume: bool,
    dist: Dist,
    dev: torch.device,
    workers: int,
    threads: int | None,
    max_minutes: float | None,
    progress: bool | None,
    echo: Callable[[str], None],
    started: float,
) -> dict[str, Any]:
    if not dist.is_main:
        echo = _silent
    problem = None
    if dist.is_main:
        try:
            if not resume:
                refuse_existing_run(out)
            out.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(out)
        except FcnDeployError as e:
            problem = str(e)
    problem = dist.broadcast(problem, "the start of the run")
    if problem:
        raise FcnDeployError(problem if dist.is_main else f"{dist.who}: rank 0 stopped the run: {problem}")
    progress = (sys.stderr.isatty() if progress is None else progress) and dist.is_main
    apply_threads(cpu_threads(dist, threads) if dev.type == "cpu" else threads)
    use_amp = cfg.amp and dev.type == "cuda"

    opts = dict(cfg.dataset_options)
    train_ds = build_dataset(cfg.dataset, cfg.data_root, cfg.train_split, **opts)
    val_ds = build_dataset(cfg.dataset, cfg.data_root, cfg.val_split, **opts)
    norm = Normalization.preset(cfg.normalization)

    ckpt = resume_config(out)[1] if resume else None
    resumed_epoch = dist.broadcast(int(ckpt["epoch"]) if ckpt is not None else None, "resume")
    if ckpt is not None and int(ckpt["epoch"]) != resumed_epoch:
        raise FcnDeployError(
            f"{dist.who}: {out / LAST} holds epoch {ckpt['epoch']} but rank 0's holds {resumed_epoch}; "
            "--output must be one folder every node shares"
        )
    torch.manual_seed(cfg.seed)  # the initial weights
    model = _build_model(
        cfg if ckpt is None else dataclasses.replace(cfg, backbone_weights=None, init_from=None),
        train_ds.num_classes,
    )
    card = build_card(cfg, model, train_ds, val_ds)
    model.to(dev)
    net = parallel_model(model, cfg, dist, dev, echo)
    optimizer = build_optimizer(
        cfg.optimizer, model, cfg.resolved_lr, cfg.resolved_weight_decay, cfg.momentum
    )
    batches = math.ceil(len(train_ds) / cfg.batch_size)  # global batches
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
    if ckpt is not None:
        log, restored = restore_log(log, ckpt.get("log"))
        if restored and dist.is_main:
            write_log(out / LOG, log)
            echo(f"{out / LOG}: restored the line(s) of epoch(s) {', '.join(map(str, restored))} from {out / LAST}")

    train_set = TrainSet(train_ds, cfg, norm)
    stopped_early = False
    from tqdm import tqdm

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.monotonic()
        loader, shares = epoch_loader(
            train_set, epoch, workers, dev.type == "cuda", dist.rank, dist.world_size
        )
        model.train()
        optimizer.zero_grad(set_to_none=True)
        lr = optimizer.param_groups[0]["lr"]  # logged: the weights' learning rate at the epoch's first step
        step_losses: list[float] = []  # this rank's share of each global batch's loss
        bar = tqdm(
            loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, file=sys.stderr, disable=not progress
        )
        for b, ((x, y), share) in enumerate(zip(bar, shares, strict=True), start=1):
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            model.set_dropout_seeds([sample_seed(cfg.seed, epoch, i) for i in share.items])
            loss = dist.call(
                f"training step {b} of epoch {epoch}",
                functools.partial(
                    train_step, net, x, y, share, b, batches, cfg, train_ds.ignore_index, dist, scaler, optimizer,
                    scheduler, use_amp, dev, epoch,
                ),
            )  # fmt: skip
            step_losses.append(loss)
            bar.set_postfix(loss=f"{sum(step_losses) / len(step_losses) * dist.world_size:.4f}")
        bar.close()
        model.set_dropout_seeds(None)
        global_losses = dist.all_reduce_sum(
            torch.tensor(step_losses, dtype=torch.float64), f"the losses of epoch {epoch}"
        ).tolist()
        sizes = [share.global_size for share in shares]
        epoch_loss = sum(v * n for v, n in zip(global_losses, sizes, strict=True)) / max(sum(sizes), 1)
        train_seconds = time.monotonic() - t0

        val = None
        if epoch % cfg.val_every == 0 or epoch == cfg.epochs:
            val = validate(model, val_ds, norm, dev, cfg.resize, progress, dist)
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
        entry = {
            "epoch": epoch,
            "loss": epoch_loss,
            "step_losses": global_losses,
            "lr": lr,
            "train_seconds": round(train_seconds, 3),
            "seconds": round(time.monotonic() - t0, 3),
            "val": val,
            "best_mean_iou": best_miou if best_epoch else None,
            "best_epoch": best_epoch or None,
        }
        if dist.world_size > 1:
            entry["world_size"] = dist.world_size
        log.append(entry)
        if improved and dist.is_main:
            best_card = card.replace(
                provenance={**card.provenance, "epoch": epoch, "val_metrics": brief_metrics(val)}
            )
            save_checkpoint(out / BEST, model, best_card, **state, val_metrics=val)
        if dist.is_main:
            save_checkpoint(
                out / LAST, model, card.replace(provenance={**card.provenance, "epoch": epoch}), **state,
                log=log,  # the history so far: --resume restores a line that a kill kept out of log.jsonl
            )
        if dist.is_main:
            write_log(out / LOG, log)
        miou = f"  val mIoU {val['mean_iou']:.4f}" if val else ""
        echo(
            f"epoch {epoch}/{cfg.epochs}  loss {entry['loss']:.4f}  lr {entry['lr']:.3g}{miou}  {entry['seconds']:.1f}s"
        )
        out_of_time = max_minutes is not None and time.monotonic() - started > max_minutes * 60
        if dist.broadcast(out_of_time, f"the end of epoch {epoch}") and epoch < cfg.epochs:
            stopped_early = True
            echo(
                f"stopping after epoch {epoch}: the {max_minutes:g}-minute budget is spent"
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
        "world_size": dist.world_size,
    }


def _silent(_: str) -> None:
    pass
