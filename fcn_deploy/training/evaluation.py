"""The trainer's validation and `evaluate_model`: a live model scored by the one score() (fcn_deploy.core.scoring)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fcn_deploy.core.card import ModelCard, Normalization
from fcn_deploy.core.model_config import ModelConfig
from fcn_deploy.core.scoring import Score, score
from fcn_deploy.training.backend import TorchBackend


def evaluate_model(
    model: nn.Module,
    dataset: Any,
    norm: Normalization,
    device: str | torch.device = "cpu",
    size: tuple[int, int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU, per-class IoU and num_images.

    With `size` the network sees each image resized to it; predictions are scored at the labels' own size.
    """
    return score_model(model, dataset, norm, device, size, progress).metrics


def score_model(
    model: nn.Module,
    dataset: Any,
    norm: Normalization,
    device: str | torch.device = "cpu",
    size: tuple[int, int] | None = None,
    progress: bool = False,
    indices: Any = None,
) -> Score:
    """evaluate_model's Score (metrics and confusion matrix) of the items `indices` (default: all)."""
    # score() reads only the normalisation and the classes from the card: any module can be scored.
    card = ModelCard.from_config(
        ModelConfig(num_classes=dataset.num_classes), class_names=dataset.class_names, normalization=norm
    )
    was_training = model.training
    model.eval()
    try:
        backend = TorchBackend(model, card, device)
        return score(backend, dataset, size, indices=indices, progress="evaluate" if progress else None)
    finally:
        model.train(was_training)
