"""The training recipes' choices and defaults (torch-free, so the CLI imports them): the paper's SGD and AdamW."""

from __future__ import annotations

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("fixed", "poly", "cosine")
REDUCTIONS = ("sum", "mean")
# Reference solver learning rates for the sum-reduced loss (fcn.md 3.2: CAFFE VOC solvers).
PAPER_LR_SUM = {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14, "fcn8s-atonce": 1e-10}
# A per-pixel mean divides the gradient by the pixel count; ~2e5 pixels in a 500x375 VOC image (fcn.md 3.2).
MEAN_LR_FACTOR = 2e5
ADAMW_LR = 3e-3
ADAMW_WEIGHT_DECAY = 1e-4
SGD_MOMENTUM = 0.99
SGD_WEIGHT_DECAY = 5e-4
# The paper trains SGD at a fixed rate on the summed loss; from-scratch AdamW anneals a per-pixel mean.
DEFAULT_SCHEDULE = {"sgd": "fixed", "adamw": "cosine"}
DEFAULT_REDUCTION = {"sgd": "sum", "adamw": "mean"}


def default_lr(optimizer: str, variant: str, reduction: str) -> float:
    if optimizer == "adamw":
        return ADAMW_LR
    lr = PAPER_LR_SUM[variant]
    return lr * MEAN_LR_FACTOR if reduction == "mean" else lr


def default_weight_decay(optimizer: str) -> float:
    return ADAMW_WEIGHT_DECAY if optimizer == "adamw" else SGD_WEIGHT_DECAY
