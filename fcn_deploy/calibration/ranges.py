"""Per-tensor activation ranges from calibration images: min/max plus an |x| histogram, streamed one feed at a time.

ONNX Runtime's histogram calibrators keep every intermediate output of every image handed to one `collect_data`
call; here each feed is reduced to a min, a max and a fixed-size histogram before the next one runs, so memory
stays at one image's activations however many images calibrate. The thresholds follow TensorRT's calibrators:
entropy = the KL-divergence-optimal clipping of a 2048-bin |x| histogram into 128 levels, percentile = the
99.99th percentile of |x|, minmax = max |x|.
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

METHODS = ("entropy", "percentile", "minmax")
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
        raise ValueError(f"unknown calibration method {method!r}")


def _entropy_bins(hist: np.ndarray) -> int:
    """Number of histogram bins to keep: the clipping whose 128-level quantisation loses the least information."""
    nonzero = np.nonzero(hist)[0]
    last = int(nonzero[-1]) + 1 if nonzero.size else NUM_LEVELS
    if last <= NUM_LEVELS:
        return last  # fewer occupied bins than levels: nothing to clip
    hist = hist.astype(np.float64)
    hist[0] = hist[1]  # the spike of exact zeros after a ReLU would otherwise decide the clip (pytorch-quantization)
    best, best_i = math.inf, last
    for i in range(NUM_LEVELS, last + 1):
        sliced = hist[:i]
        p = sliced.copy()
        p[i - 1] += hist[i:].sum()
        group = np.minimum(np.arange(i) // (i // NUM_LEVELS), NUM_LEVELS - 1)
        nz = sliced != 0
        level_sum = np.bincount(group, weights=sliced, minlength=NUM_LEVELS)
        level_nz = np.bincount(group, weights=nz, minlength=NUM_LEVELS)
        q = np.where(nz, (level_sum / np.maximum(level_nz, 1))[group], 0.0)
        p, q = p / p.sum(), q / max(q.sum(), 1e-300)
        used = p > 0
        # empty candidate bins where the reference has mass get a tiny probability (finite but costly KL)
        kl = float(np.sum(p[used] * np.log(p[used] / np.maximum(q[used], 1e-10))))
        if kl < best:
            best, best_i = kl, i
    return best_i


def calibration_tensors(model: Any, op_types: Sequence[str] | None) -> list[str]:
    """Float activations (not weights) entering or leaving nodes of `op_types` (all nodes when None)."""
    import onnx

    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.value_info}
    types.update({vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input})
    types.update({vi.name: vi.type.tensor_type.elem_type for vi in model.graph.output})
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
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    existing = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor by name
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del model
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
    return {
        name: TensorRange(float(h.min), float(h.max), float(h.threshold(method)))
        for name, h in hists.items()
        if h.min <= h.max
    }


def _one_at_a_time(feeds: Iterable[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    if hasattr(feeds, "get_next"):  # ORT's CalibrationDataReader protocol
        while (feed := feeds.get_next()) is not None:
            yield feed
    else:
        yield from feeds
