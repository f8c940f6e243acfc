"""Per-tensor activation ranges from calibration images: min/max plus an |x| histogram, streamed one feed at a time.

ONNX Runtime's histogram calibrators keep every intermediate output of every image handed to one `collect_data`
call; here each feed is reduced to a min, a max and a fixed-size histogram before the next one runs, so memory
stays at one image's activations however many images calibrate. The thresholds follow TensorRT's calibrators and
pytorch-quantization's: entropy = the KL-divergence-optimal clipping of a 2048-bin |x| histogram into 128 levels,
percentile = the 99.99th percentile of |x|, minmax = max |x|, mse = the clipping with the least expected squared
error over the histogram (rounding inside it, the clipped tail outside) at 128 levels. One pass yields all four
(collect_all_ranges): `--method best` keeps the one whose INT8 lowering loses least on held-out images
(calibration.plan.best_method). On the CamVid FCN-8s (Resize form, 32 plan images) full ORT-flavour INT8 lost
0.24 points of mean IoU with mse, 0.30 with percentile, 0.64 with entropy; the TensorRT flavour 0.35 / 0.33 / 0.67.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.onnx_io import elem_types

METHODS = ("entropy", "percentile", "minmax", "mse")
BEST = "best"  # every method from one pass; the INT8 lowering that loses least on the plan images decides
log = logging.getLogger(__name__)

NUM_BINS = 2048
NUM_LEVELS = 128  # positive int8 levels: what the entropy threshold is optimised for
PERCENTILE = 99.99


@dataclass(frozen=True)
class TensorRange:
    """What calibration learned about one tensor: its extremes and the method's clipping threshold `amax`."""

    min: float
    max: float
    amax: float

    def symmetric(self) -> tuple[float, float]:
        return -self.amax, self.amax

    def asymmetric(self) -> tuple[float, float]:
        return max(self.min, -self.amax), min(self.max, self.amax)

    def to_dict(self) -> dict[str, float]:
        return {"min": self.min, "max": self.max, "amax": self.amax}


class _AbsHistogram:
    """|x| histogram over [0, limit) with NUM_BINS bins; the limit grows by whole factors so merging is exact."""

    def __init__(self) -> None:
        self.counts = np.zeros(NUM_BINS, np.int64)
        self.limit = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, x: np.ndarray) -> None:
        x = x.ravel()
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise FloatingPointError("inf/NaN activation")
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        amax = max(abs(lo), abs(hi))
        if amax > self.limit:
            self._grow(amax)
        if self.limit == 0.0:
            self.counts[0] += x.size
            return
        idx = np.minimum((np.abs(x) * (NUM_BINS / self.limit)).astype(np.int64), NUM_BINS - 1)
        self.counts += np.bincount(idx, minlength=NUM_BINS)

    def _grow(self, amax: float) -> None:
        if self.limit == 0.0:  # everything so far was exactly 0, which stays in bin 0
            self.limit = amax
            return
        k = math.ceil(amax / self.limit)
        padded = np.zeros(math.ceil(NUM_BINS / k) * k, np.int64)
        padded[:NUM_BINS] = self.counts
        merged = padded.reshape(-1, k).sum(axis=1)
        self.counts = np.zeros(NUM_BINS, np.int64)
        self.counts[: merged.size] = merged
        self.limit *= k

    def threshold(self, method: str) -> float:
        amax = max(abs(self.min), abs(self.max))
        if method == "minmax" or amax == 0.0:
            return amax
        width = self.limit / NUM_BINS
        if method == "percentile":
            cdf = np.cumsum(self.counts) / self.counts.sum()
            return min(amax, (int(np.searchsorted(cdf, PERCENTILE / 100.0)) + 1) * width)
        if method == "entropy":
            return min(amax, _entropy_bins(self.counts) * width)
        if method == "mse":
            return min(amax, _mse_bins(self.counts) * width)
        raise ValueError(f"unknown calibration method {method!r}")


def _prefix(a: np.ndarray) -> np.ndarray:
    """_prefix(a)[k] = a[:k].sum(): any clip's sums as a difference of two entries."""
    return np.concatenate(([0.0], np.cumsum(a)))


def _mse_bins(hist: np.ndarray) -> int:
    """Number of histogram bins to keep: the clip T = i bins whose 128-level quantisation has the least expected
    squared error, rounding (step T / 128, error step^2 / 12 per value) for |x| <= T plus (|x| - T)^2 for the clipped
    tail at the bin centres, every candidate at once from prefix sums. Bin 0 gets no rounding error: after a ReLU
    it holds the exact zeros (half the values), which quantise exactly, and weighing them chose too small a clip."""
    nonzero = np.nonzero(hist)[0]
    if not nonzero.size:
        return 1
    h = hist.astype(np.float64)
    centre = np.arange(h.size) + 0.5  # in bins
    clip = np.arange(1, int(nonzero[-1]) + 2)
    n, s1, s2 = _prefix(h), _prefix(h * centre), _prefix(h * centre**2)
    rounding = (n[clip] - h[0]) * (clip / NUM_LEVELS) ** 2 / 12
    tail = (s2[-1] - s2[clip]) - 2 * clip * (s1[-1] - s1[clip]) + clip**2 * (n[-1] - n[clip])
    return int(clip[int(np.argmin(rounding + tail))])


def _entropy_bins(hist: np.ndarray) -> int:
    """Number of histogram bins to keep: the clipping whose 128-level quantisation loses the least information.

    For every candidate clip i (bins [0, i) kept, the tail folded into bin i - 1) the KL divergence between the
    kept distribution p and its 128-level quantisation q, all candidates at once from prefix sums (TensorRT's
    per-candidate loop took ~0.18 s per tensor): below bin i - 1, p = h / total and q = level mean / kept mass, so
    sum p log(p / q) splits into sums of h log h, h and level mass x log(level mean), each a prefix-sum difference.
    """
    nonzero = np.nonzero(hist)[0]
    last = int(nonzero[-1]) + 1 if nonzero.size else NUM_LEVELS
    if last <= NUM_LEVELS:
        return last  # fewer occupied bins than levels: nothing to clip
    h = hist.astype(np.float64)
    h[0] = h[1]  # the spike of exact zeros after a ReLU would otherwise decide the clip (pytorch-quantization)
    total = h.sum()
    clip = np.arange(NUM_LEVELS, last + 1)
    mass, occupied = _prefix(h), _prefix(h != 0)
    h_log_h = _prefix(h * np.log(np.where(h > 0, h, 1.0)))
    # Level l of clip i covers bins [l * w, (l + 1) * w) with w = i // 128; the last level also takes the rest.
    edges = np.minimum((clip // NUM_LEVELS)[:, None] * np.arange(NUM_LEVELS + 1), clip[:, None])
    edges[:, -1] = clip
    level_mass = mass[edges[:, 1:]] - mass[edges[:, :-1]]
    level_mean = level_mass / np.maximum(occupied[edges[:, 1:]] - occupied[edges[:, :-1]], 1)
    top = clip - 1  # bin i - 1, always in the last level
    below_mass = level_mass.copy()
    below_mass[:, -1] -= h[top]
    kept = mass[clip]
    kl = (h_log_h[top] - mass[top] * np.log(total) - (below_mass * np.log(np.where(level_mean > 0, level_mean, 1.0))).sum(1)
          + mass[top] * np.log(np.where(kept > 0, kept, 1.0))) / total  # fmt: skip
    # Bin i - 1 holds the clipped tail too; an empty bin there gets a tiny q (finite but costly KL).
    p_top = (h[top] + total - kept) / total
    q_top = np.where(h[top] != 0, level_mean[:, -1] / np.maximum(kept, 1e-300), 0.0)
    kl += np.where(p_top > 0, p_top * np.log(np.where(p_top > 0, p_top, 1.0) / np.maximum(q_top, 1e-10)), 0.0)
    return int(clip[int(np.argmin(kl))])


def calibration_tensors(model: Any, op_types: Sequence[str] | None) -> list[str]:
    """Float activations (not weights) entering or leaving nodes of `op_types` (all nodes when None)."""
    import onnx

    types = elem_types(model)
    weights = {init.name for init in model.graph.initializer}
    out: dict[str, None] = {}
    for node in model.graph.node:
        if op_types is None or node.op_type in op_types:
            for name in (*node.input, *node.output):
                if name and name not in weights and types.get(name) == onnx.TensorProto.FLOAT:
                    out[name] = None
    return list(out)


def collect_ranges(
    model_path: Path, feeds: Iterable[dict[str, np.ndarray]], tensors: Sequence[str], method: str
) -> dict[str, TensorRange]:
    """Run the FP32 model on each feed with `tensors` exposed as outputs and reduce them feed by feed."""
    return _ranges(_histograms(model_path, feeds, tensors), method)


def collect_all_ranges(
    model_path: Path, feeds: Iterable[dict[str, np.ndarray]], tensors: Sequence[str]
) -> dict[str, dict[str, TensorRange]]:
    """collect_ranges for every method in METHODS, from one pass over the feeds."""
    hists = _histograms(model_path, feeds, tensors)
    return {method: _ranges(hists, method) for method in METHODS}


def _ranges(hists: dict[str, _AbsHistogram], method: str) -> dict[str, TensorRange]:
    return {
        name: TensorRange(float(h.min), float(h.max), float(h.threshold(method)))
        for name, h in hists.items()
        if h.min <= h.max
    }


def tensor_session(model_path: Path, tensors: Sequence[str]) -> Any:
    """An ONNX Runtime CPU session of the model at `model_path` that also outputs `tensors` (graph optimisations
    off, so every tensor keeps its name)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    existing = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _histograms(
    model_path: Path, feeds: Iterable[dict[str, np.ndarray]], tensors: Sequence[str]
) -> dict[str, _AbsHistogram]:
    session = tensor_session(model_path, tensors)
    hists = {name: _AbsHistogram() for name in tensors}
    seen = 0
    for feed in _one_at_a_time(feeds):
        values = session.run(list(tensors), feed)
        for name, value in zip(tensors, values, strict=True):
            try:
                hists[name].add(value)
            except FloatingPointError:
                raise FcnDeployError(
                    f"tensor {name!r} is inf/NaN on a calibration image in the FP32 model itself; "
                    "check the model and the preprocessing (--mean/--std)"
                ) from None
        seen += 1
        if seen % 100 == 0:
            log.info("  calibration: %d feeds done", seen)
    if seen == 0:
        raise ValueError("no calibration feeds")
    return hists


def _one_at_a_time(feeds: Iterable[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    if hasattr(feeds, "get_next"):  # ORT's CalibrationDataReader protocol
        while (feed := feeds.get_next()) is not None:
            yield feed
    else:
        yield from feeds
