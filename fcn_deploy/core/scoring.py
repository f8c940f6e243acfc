"""The one scoring function: a backend over a dataset, scored with the one confusion matrix.

Used by `evaluate`, the trainer's validation, the `quantize` summary and `report`, so the same model on the same
images prints the same mean IoU everywhere. The convention: the network sees each image resized to `size` (or at
its own size when `size` is None) and its label map is brought back to the label's resolution (nearest), so the
ground truth is never resampled.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fcn_deploy.core.metrics import ConfusionMatrix
from fcn_deploy.core.preprocess import preprocess, resize_labels


class LabelledImages(Protocol):
    """What score() needs of a dataset: (image, labels) pairs plus the class list (SegmentationDataset has it)."""

    num_classes: int
    ignore_index: int | None
    class_names: Sequence[str]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class Score:
    metrics: dict[str, Any]  # pixel_accuracy, mean_accuracy, mean_iou, fw_iou, per_class_iou, num_images
    predictions: list[np.ndarray] = field(default_factory=list)  # network-size label maps (keep_predictions)
    matrix: ConfusionMatrix | None = None


def predict(backend: Any, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB -> H'xW' label map at the network size (`size`, or the image's own)."""
    return np.asarray(backend.run(preprocess(image, backend.card.normalization, size))["labels"][0])


def score(
    backend: Any,
    dataset: LabelledImages,
    size: tuple[int, int] | None = None,
    *,
    indices: Iterable[int] | None = None,
    keep_predictions: bool = False,
    progress: str | None = None,
) -> Score:
    """Score `backend` (a core.backend.Backend) on `dataset` (or the items `indices` of it).

    progress: a tqdm description shown on an interactive stderr, or None for silence.
    """
    cm = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    order = list(range(len(dataset)) if indices is None else indices)
    items: Iterable[int] = order
    if progress is not None and sys.stderr.isatty():
        try:
            from tqdm import tqdm  # the train extra; a deploy box scores without a bar
        except ImportError:
            pass
        else:
            items = tqdm(order, desc=progress, leave=False, file=sys.stderr)
    preds = []
    for i in items:
        image, labels = dataset[i]
        pred = predict(backend, image, size)
        if keep_predictions:
            preds.append(pred)
        cm.update(labels, pred if pred.shape == labels.shape[:2] else resize_labels(pred, labels.shape[:2]))
    metrics = cm.compute(dataset.class_names)
    metrics["num_images"] = len(order)
    return Score(metrics, preds, cm)
