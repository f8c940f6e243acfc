"""Optimisers and learning-rate schedules: the paper's SGD recipe and AdamW for from-scratch CPU training."""

from __future__ import annotations

import math

import torch
from torch import nn

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.training.recipes import OPTIMIZERS, SCHEDULES, SGD_MOMENTUM


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Weights at lr with decay; biases and batch-norm parameters at 2x lr without decay (Caffe lr_mult 2,
    decay_mult 0). Frozen parameters (the fixed bilinear upsampling) are left out entirely."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
            (no_decay if name == "bias" or is_norm else decay).append(p)
    return [
        {"params": decay, "lr": lr, "weight_decay": weight_decay, "name": "weights"},
        {"params": no_decay, "lr": 2 * lr, "weight_decay": 0.0, "name": "biases"},
    ]


def build_optimizer(
    name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float = SGD_MOMENTUM
) -> torch.optim.Optimizer:
    if lr <= 0:
        raise FcnDeployError(f"--lr must be > 0, got {lr}")
    groups = param_groups(model, lr, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise FcnDeployError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def schedule_factor(schedule: str, step: int, total_steps: int, power: float = 0.9) -> float:
    """Multiplier on every group's base learning rate after `step` optimiser steps of `total_steps`."""
    progress = min(step / max(total_steps, 1), 1.0)
    if schedule == "fixed":
        return 1.0
    if schedule == "poly":
        return (1.0 - progress) ** power
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise FcnDeployError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimiser step; its state_dict (the step count) is what --resume restores."""
    schedule_factor(schedule, 0, total_steps)  # validate the name now, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule_factor(schedule, step, total_steps)
    )
