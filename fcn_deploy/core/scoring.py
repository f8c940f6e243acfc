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

    progress: the description of a progress bar on stderr (when tqdm is installed), or None for silence.
    """
    order = list(range(len(dataset)) if indices is None else indices)
    (result,) = score_pairs(
        [backend],
        (dataset[i] for i in _with_progress(order, progress)),
        size,
        num_classes=dataset.num_classes,
        ignore_index=dataset.ignore_index,
        class_names=dataset.class_names,
        keep_predictions=keep_predictions,
    )
    return result


def score_pairs(
    backends: Sequence[Any],
    pairs: Iterable[tuple[np.ndarray, np.ndarray | None]],
    size: tuple[int, int] | None = None,
    *,
    num_classes: int | None,
    ignore_index: int | None = None,
    class_names: Sequence[str] | None = None,
    keep_predictions: bool = False,
) -> list[Score]:
    """score() for several backends over a stream of (image, labels) pairs, each image read once (the quantize
    summary compares two models on images it re-reads from disk). Without num_classes, or for a pair whose
    labels are None, only predictions are made: the metrics then hold num_images alone."""
    cms = [ConfusionMatrix(num_classes, ignore_index) for _ in backends] if num_classes is not None else None
    preds: list[list[np.ndarray]] = [[] for _ in backends]
    count = 0
    for image, labels in pairs:
        count += 1
        for k, backend in enumerate(backends):
            pred = predict(backend, image, size)
            if keep_predictions:
                preds[k].append(pred)
            if cms is not None and labels is not None:
                hw = labels.shape[:2]
                cms[k].update(labels, pred if pred.shape == hw else resize_labels(pred, hw))
    results = []
    for k in range(len(backends)):
        metrics = cms[k].compute(class_names) if cms is not None else {}
        metrics["num_images"] = count
        results.append(Score(metrics, preds[k], cms[k] if cms is not None else None))
    return results


def _with_progress(order: list[int], progress: str | None) -> Iterable[int]:
    if progress is None:
        return order
    try:
        from tqdm import tqdm  # the train extra; a deploy box scores without a bar
    except ImportError:
        return order
    # a bar redrawn into a log file (stderr not a terminal) is only noise there
    return tqdm(order, desc=progress, leave=False, file=sys.stderr, disable=not sys.stderr.isatty())
