"""The paper's four segmentation metrics from one confusion matrix (torch-free; training, evaluation and reports).

Definitions follow FCN (Long et al., CVPR 2015, section 5) and its reference `score.py`: n_ij counts pixels of
ground-truth class i predicted as j, t_i = sum_j n_ij. Ground-truth values outside [0, n) (the ignore label)
are skipped. Classes absent from both ground truth and prediction have an undefined IoU and drop out of the
means; accuracy of a class is undefined when it is absent from the ground truth; frequency-weighted IoU sums
over classes with t_i > 0 only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ConfusionMatrix:
    """Accumulates an n x n int64 histogram; rows are ground truth, columns are predictions."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    @property
    def matrix(self) -> np.ndarray:
        return self._matrix.copy()

    def update(self, target: np.ndarray, pred: np.ndarray) -> None:
        """Add one label map (or a batch) of ground truth and predictions of the same shape."""
        target, pred = np.asarray(target), np.asarray(pred)
        if target.shape != pred.shape:
            raise ValueError(f"target shape {target.shape} != prediction shape {pred.shape}")
        n = self.num_classes
        t = target.reshape(-1).astype(np.int64)
        p = pred.reshape(-1).astype(np.int64)
        keep = (t >= 0) & (t < n)
        if self.ignore_index is not None:
            keep &= t != self.ignore_index
        t, p = t[keep], p[keep]
        if p.size and (p.min() < 0 or p.max() >= n):
            raise ValueError(f"predictions must lie in [0, {n}), got values in [{p.min()}, {p.max()}]")
        self._matrix += np.bincount(n * t + p, minlength=n * n).reshape(n, n)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts (e.g. from a worker) into this one; returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class counts into {self.num_classes} classes")
        self._matrix += other._matrix
        return self

    def reset(self) -> None:
        self._matrix[:] = 0

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        return metrics_from_matrix(self._matrix, class_names)


def _per_class(values: np.ndarray, class_names: Sequence[str] | None) -> list | dict:
    out = [None if np.isnan(v) else float(v) for v in values]
    return dict(zip(class_names, out, strict=True)) if class_names is not None else out


def metrics_from_matrix(matrix: np.ndarray, class_names: Sequence[str] | None = None) -> dict:
    """pixel_accuracy, mean_accuracy, mean_iou, fw_iou (fractions in [0, 1]; NaN when nothing is labelled)
    plus per_class_iou / per_class_accuracy (a list, or name -> value with class_names; None = undefined)."""
    hist = np.asarray(matrix, np.float64)
    if class_names is not None and len(class_names) != hist.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {hist.shape[0]}-class confusion matrix")
    tp = np.diag(hist)
    gt = hist.sum(axis=1)  # t_i
    union = gt + hist.sum(axis=0) - tp
    total = gt.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = tp / gt  # NaN where the class is absent from the ground truth
        iou = tp / union  # NaN where absent from both ground truth and prediction
    present = gt > 0
    nan = float("nan")
    return {
        "pixel_accuracy": float(tp.sum() / total) if total else nan,
        "mean_accuracy": float(np.nanmean(acc)) if present.any() else nan,
        "mean_iou": float(np.nanmean(iou)) if (union > 0).any() else nan,
        "fw_iou": float((gt[present] * iou[present]).sum() / total) if total else nan,
        "per_class_iou": _per_class(iou, class_names),
        "per_class_accuracy": _per_class(acc, class_names),
        "num_pixels": int(total),
    }


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of positions where two label maps agree (e.g. one backend against another)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("pixel_agreement of empty label maps is undefined")
    return float(np.count_nonzero(a == b) / a.size)
