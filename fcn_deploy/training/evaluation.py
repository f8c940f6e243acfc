"""Run a model over a dataset of whole images and score it with the one confusion-matrix implementation."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from torch import nn

from fcn_deploy.core.card import Normalization
from fcn_deploy.core.metrics import ConfusionMatrix
from fcn_deploy.core.preprocess import preprocess, resize_labels


@torch.inference_mode()
def predict_labels(
    model: nn.Module,
    image: np.ndarray,
    norm: Normalization,
    device: torch.device,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """HxWx3 uint8 RGB -> HxW int labels. With `size` the network sees the image resized to it and the
    prediction is brought back to the image's own size (nearest), so scores are always on the original labels."""
    x = torch.from_numpy(preprocess(image, norm, size)).to(device)
    pred = model(x).argmax(1)[0].cpu().numpy()
    if pred.shape != image.shape[:2]:
        pred = resize_labels(pred, image.shape[:2])
    return pred


def evaluate_model(
    model: nn.Module,
    dataset: Any,
    norm: Normalization,
    device: str | torch.device = "cpu",
    size: tuple[int, int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU, per-class IoU and num_images."""
    from tqdm import tqdm

    device = torch.device(device)
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    try:
        items = tqdm(range(len(dataset)), desc="evaluate", leave=False, file=sys.stderr, disable=not progress)
        for i in items:
            image, labels = dataset[i]
            cm.update(labels, predict_labels(model, image, norm, device, size))
    finally:
        model.train(was_training)
    metrics = cm.compute(dataset.class_names)
    metrics["num_images"] = len(dataset)
    return metrics
