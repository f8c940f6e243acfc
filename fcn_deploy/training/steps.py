"""One data-parallel training step and the sharded validation the loop runs each epoch (see trainer.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fcn_deploy.core.card import Normalization
from fcn_deploy.core.datasets import SegmentationDataset
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.metrics import metrics_from_matrix
from fcn_deploy.training.config import TrainConfig
from fcn_deploy.training.distributed import Dist
from fcn_deploy.training.evaluation import score_model
from fcn_deploy.training.fcn import FCN
from fcn_deploy.training.loss import loss_denominator, summed_loss


def parallel_model(model: FCN, cfg: TrainConfig, dist: Dist, dev: torch.device, echo: Callable[[str], None]) -> Any:
    """The module the training steps call: `model` itself alone, DistributedDataParallel around it under a
    launcher (checkpoints save `model`, so they never carry DDP's `module.` prefix)."""
    if not dist.enabled:
        return model
    if cfg.batch_norm:
        if dev.type == "cuda":
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps the BN layers in place; same keys
        else:
            echo(
                "note: --batch-norm on the CPU: PyTorch's SyncBatchNorm needs CUDA, so batch statistics stay "
                f"per process ({cfg.batch_size // dist.world_size} images each, not the global batch)"
            )
    from torch.nn.parallel import DistributedDataParallel

    ids = [dev.index] if dev.type == "cuda" else None
    return dist.call("wrapping the model", lambda: DistributedDataParallel(model, device_ids=ids))


def train_step(
    net: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    share: Any,
    b: int,
    batches: int,
    cfg: TrainConfig,
    ignore_index: int | None,
    dist: Dist,
    scaler: Any,
    optimizer: Any,
    scheduler: Any,
    use_amp: bool,
    dev: torch.device,
    epoch: int,
) -> float:
    """One global batch on this rank: its share of the batch's loss, backward (DDP averages the gradients over
    the ranks, hence the world-size factor), and the optimiser step every `accumulate` batches."""
    red = cfg.loss_reduction
    if red == "sum":  # divided by the images of the global batch
        denom = torch.tensor(float(share.global_size), dtype=torch.float64)
    else:  # by its valid pixels, summed over the ranks
        local = loss_denominator(y, ignore_index, red) if share.real else torch.zeros((), dtype=torch.float64)
        denom = dist.all_reduce_sum(local.reshape(1), f"the pixel count of step {b}")[0]
    with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
        summed = summed_loss(net(x), y, ignore_index)
    if not share.real:
        summed = summed * 0.0  # a stand-in item: takes the step with DDP, adds nothing
    loss = summed / denom.clamp(min=1).to(device=summed.device, dtype=summed.dtype)
    if not torch.isfinite(loss):
        raise FcnDeployError(
            f"loss became {loss.item()} at epoch {epoch}, batch {b}; lower --lr (now {cfg.resolved_lr:g}) "
            "or use --loss-reduction mean"
        )
    scaler.scale(loss * (dist.world_size / cfg.accumulate)).backward()
    if b % cfg.accumulate == 0 or b == batches:
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    return loss.item()


def validate(
    model: FCN,
    val_ds: SegmentationDataset,
    norm: Normalization,
    dev: torch.device,
    size: tuple[int, int] | None,
    progress: bool,
    dist: Dist,
) -> dict[str, Any]:
    """Each rank scores a disjoint shard (every world_size-th image, no padding, no duplicate); the confusion
    matrices are summed, so the metrics are exactly those of one process scoring every image."""
    shard = range(dist.rank, len(val_ds), dist.world_size)
    scored = score_model(model, val_ds, norm, dev, size, progress, indices=shard)
    if not dist.enabled:
        return scored.metrics
    matrix = scored.matrix.matrix if scored.matrix is not None else np.zeros((val_ds.num_classes,) * 2, np.int64)
    total = dist.all_reduce_sum(torch.from_numpy(matrix), "validation").numpy()
    metrics = metrics_from_matrix(total, val_ds.class_names)
    metrics["num_images"] = len(val_ds)
    return metrics


def brief_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou") if k in metrics}
