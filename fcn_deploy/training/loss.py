"""Per-pixel softmax cross-entropy with an ignore label (Long et al. section 4): `sum` (paper) or `mean`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fcn_deploy.training.recipes import REDUCTIONS

NO_IGNORE = -100  # torch's default ignore value, used when a dataset has no ignore label


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None, reduction: str = "mean"
) -> torch.Tensor:
    """logits N x C x H x W, target N x H x W int64.

    `sum`: summed over valid pixels and divided by the batch size only (the reference solvers' unnormalised
    loss at batch 1, so their learning rates carry over to any batch size). `mean`: averaged over valid pixels;
    a batch with no valid pixel gives 0 rather than NaN.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    total = summed_loss(logits, target, ignore_index)
    if reduction == "sum":
        return total / logits.shape[0]
    ignore = NO_IGNORE if ignore_index is None else ignore_index
    return total / (target != ignore).sum().clamp(min=1)


def summed_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """Cross-entropy summed over the valid pixels (the numerator of either reduction)."""
    ignore = NO_IGNORE if ignore_index is None else ignore_index
    return F.cross_entropy(logits.float(), target, ignore_index=ignore, reduction="sum")


def loss_denominator(target: torch.Tensor, ignore_index: int | None, reduction: str) -> torch.Tensor:
    """What the summed loss is divided by: the images (`sum`) or the valid pixels (`mean`) of `target`; summed
    over the processes first, it gives a data-parallel step the loss of the whole global batch."""
    if reduction == "sum":
        return torch.tensor(float(target.shape[0]), dtype=torch.float64)
    ignore = NO_IGNORE if ignore_index is None else ignore_index
    return (target != ignore).sum().to(torch.float64).cpu()
