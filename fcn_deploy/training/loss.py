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
    ignore = NO_IGNORE if ignore_index is None else ignore_index
    total = F.cross_entropy(logits.float(), target, ignore_index=ignore, reduction="sum")
    if reduction == "sum":
        return total / logits.shape[0]
    valid = (target != ignore).sum().clamp(min=1)
    return total / valid
