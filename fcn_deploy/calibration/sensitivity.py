"""Measured per-layer INT8 sensitivity: how much the task metric drops when one fused group of layers is the only
one quantized, and when it is the only one kept out of INT8 (AIMET QuantAnalyzer's two views).

A group is an anchor (Conv, ConvTranspose or Add: what both INT8 targets quantize and TensorRT fuses) plus the
nodes that follow it on its data path up to the next anchor (its ReLU, pooling, crop): keeping a group out of
INT8 lowers all of its nodes unquantized (the mechanism of `--exclude`), in FP16 for TensorRT and FP32 for ONNX
Runtime (lower_variant, exactly as quantize then writes the plan).
Every measurement lowers the calibrated graph (int8.quantize_qdq, fp16.half_nodes), opens it from bytes as an
OrtBackend and scores it with the one core.scoring.score on images held out from range collection (taken from
the calibration source: never the images the user evaluates on). Drops are in points: mean IoU x 100, or
(1 - pixel agreement with FP32) x 100 for `agreement`.

The mean IoU drop counts INT8's losses only: a pixel INT8 gets right where FP32 got it wrong is scored as FP32
scored it. INT8 flips about 1% of CamVid's pixels, right-to-wrong and wrong-to-right about alike, so the net
change is a small difference of two large terms whose sign depends on the images: one lowering's net drop was
-0.04 points (a gain) on all 367 train images, 0.30 on its 32 plan images and 0.25 on val, while its losses alone
were 1.06 (train) and 0.98 (val). The losses transfer; the net does not. Losses-only is never below the net drop
(undoing a gain lowers that class's IoU and the other's), so a budget met on it holds for the net drop.

A few dozen plan images give a noisy drop, and a search that stops at the first estimate within budget picks the
lucky ones (CamVid: +/-0.1 on 32 plan images became -0.18 to -0.23 on val). So budgets are judged on `bound`, the
drop's 90th percentile over paired bootstrap resamples of the plan images (never below the measured drop); the
sensitivities, which only rank groups, use the measured drop.
"""

from __future__ import annotations

import itertools
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.calibration import fp16, int8
from fcn_deploy.calibration.images import ImageSet
from fcn_deploy.calibration.ranges import TensorRange
from fcn_deploy.core.atomic import scratch_dir
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.metrics import ConfusionMatrix
from fcn_deploy.core.onnx_io import elem_types
from fcn_deploy.core.preprocess import resize_labels
from fcn_deploy.core.scoring import score
from fcn_deploy.runtime.ort_backend import OrtBackend

log = logging.getLogger(__name__)

METRICS = ("miou", "agreement")
ANCHORS = ("Conv", "ConvTranspose", "Add")
RESAMPLES = 400  # paired bootstrap resamples of the plan images behind Measurement.bound
CONFIDENCE = 0.9
JUDGE_VERSION = 2  # in every cache key of a measured drop; bumped when a drop's meaning changes (2: losses only)


@dataclass(frozen=True)
class Group:
    name: str  # the anchor node's name
    op_type: str
    nodes: tuple[str, ...]  # anchor first, then the nodes after it up to the next anchor


def groups(model: Any) -> list[Group]:
    """Partition the graph's named nodes into fused groups, in graph order (see the module docstring). An Add
    anchors a group only on float data: the integer Adds of shape arithmetic (the crops' and the Resize
    upsampling's slice bounds) are nothing INT8 touches, and measuring them cost two lowerings each."""
    producer = {out: n for n in model.graph.node for out in n.output}
    known = elem_types(model)
    floats = {1, 10, 16}  # FLOAT, FLOAT16, BFLOAT16; a tensor of unknown type counts as data
    owner: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    order: list[tuple[str, str]] = []
    for node in model.graph.node:  # topologically sorted (onnx.checker and quant_pre_process keep it so)
        if not node.name:
            continue
        data = node.op_type != "Add" or known.get(node.output[0], 1) in floats
        if node.op_type in ANCHORS and data:
            owner[node.name] = node.name
            members[node.name] = [node.name]
            order.append((node.name, node.op_type))
            continue
        src = producer.get(node.input[0]) if node.input else None
        anchor = owner.get(src.name) if src is not None else None
        if anchor is not None:
            owner[node.name] = anchor
            members[anchor].append(node.name)
    return [Group(name, op, tuple(members[name])) for name, op in order]


class PlanImages:
    """Held-out calibration images in memory (a few dozen), in the LabelledImages shape score() reads."""

    def __init__(self, images: ImageSet) -> None:
        self.items = [(s.image, s.labels) for s in images]
        if not self.items:
            raise FcnDeployError(f"{images.source}: no readable images left to measure INT8 sensitivity on")
        self.has_masks = images.has_masks and all(lab is not None for _, lab in self.items)
        self.num_classes = images.num_classes if self.has_masks else None
        self.ignore_index = images.ignore_index
        self.class_names = [str(c) for c in range(self.num_classes or 0)]
        self.source = images.source

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.items[i]


def split_for_plan(images: ImageSet, wanted: int) -> tuple[ImageSet, ImageSet]:
    """(images for the activation ranges, images held out to measure sensitivity and check the plan): the last
    min(wanted, half) of the calibration selection are held out, so no range was fitted on what judges it."""
    n = len(images)
    k = min(wanted, n // 2)
    if k < 1:
        raise FcnDeployError(
            f"{images.source}: --auto needs at least 2 calibration images (some fit the ranges, the rest judge "
            f"the plan); only {n} found; raise --num-images or add images"
        )

    def sliced(start: int, stop: int | None) -> Callable[[], Any]:
        return lambda: itertools.islice(iter(images), start, stop)

    ranges_set = ImageSet(images.source, images.ids[: n - k], f"{images.fingerprint}:ranges:{n - k}",
                          images.skipped, images.num_classes, images.ignore_index, _read=sliced(0, n - k))
    plan_set = ImageSet(f"{images.source} (held out from ranges)", images.ids[n - k:], "", 0, images.num_classes,
                        images.ignore_index, _read=sliced(n - k, None))
    return ranges_set, plan_set


@dataclass
class Measurement:
    drop: float  # points of the chosen metric lost on the plan images (mean IoU: losses only, see above)
    miou: float | None
    agreement: float
    bound: float | None = None  # the drop's CONFIDENCE upper bound (bootstrap): what budgets are judged on
    net: float | None = None  # mean IoU: the plain difference FP32 - INT8 in points (gains counted)

    @property
    def judged(self) -> float:
        return self.drop if self.bound is None else self.bound

    def to_dict(self) -> dict[str, Any]:
        return {"drop": self.drop, "miou": self.miou, "agreement": self.agreement, "bound": self.bound,
                "net": self.net}


class Judge:
    """Scores lowered models against the FP32 model on held-out images (the plan search and the INT8 guard)."""

    def __init__(self, fp32: str | Path | bytes, images: PlanImages, size: tuple[int, int] | None, card: ModelCard,
                 metric: str) -> None:  # fmt: skip
        if metric not in METRICS:
            raise FcnDeployError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
        if metric == "miou" and not images.has_masks:
            raise FcnDeployError(f"{images.source}: --metric miou needs images with masks; use --metric agreement "
                                 "or calibrate on a dataset with labels (--calib-dataset)")  # fmt: skip
        self.images, self.size, self.card, self.metric = images, size, card, metric
        self.evaluations = 0
        with OrtBackend(fp32, card=card) as ref:
            s = score(ref, images, size, keep_predictions=True)
        self.reference = s.predictions
        self.miou_fp32 = s.metrics.get("mean_iou")
        self._reference_matrices = None
        if metric == "miou":  # the reference at label size once: every measured model's losses compare against it
            self._reference_at_labels = [at_labels(r, lab) for r, (_, lab) in zip(self.reference, images.items,
                                                                                  strict=True)]  # fmt: skip
            self._reference_matrices = self._matrices(self._reference_at_labels)
            self.miou_fp32 = float(_mean_iou(self._reference_matrices.sum(axis=0)[None])[0])  # as score()'s
        n = len(images)  # how often each image is drawn in each resample (the same draws for every model scored)
        self._resample_counts = np.random.default_rng(0).multinomial(n, [1 / n] * n, RESAMPLES).astype(np.float64)

    def measure_model(self, model: Any) -> Measurement:
        """The drop of `model` (a ModelProto; its Q/DQ scales nothing reads are dropped first, else ONNX Runtime
        warns about each one, for every variant scored)."""
        used = {name for n in model.graph.node for name in n.input}
        for t in [t for t in model.graph.initializer if t.name not in used]:
            model.graph.initializer.remove(t)
        return self.measure_bytes(model.SerializeToString())

    def measure_bytes(self, data: bytes) -> Measurement:
        with OrtBackend(data, card=self.card) as low:
            s = score(low, self.images, self.size, keep_predictions=True)
        self.evaluations += 1
        # per image, agreeing and all pixels: the agreement and its bootstrap both come from these counts
        agree = np.array([np.count_nonzero(a == b) for a, b in zip(self.reference, s.predictions, strict=True)])
        pixels = np.array([a.size for a in self.reference])
        agreement = agree.sum() / pixels.sum()
        miou = s.metrics.get("mean_iou")
        net = None
        if self.metric == "miou":
            losses = self._matrices(s.predictions, losses_only=True)
            drop = 100.0 * (self.miou_fp32 - float(_mean_iou(losses.sum(axis=0)[None])[0]))
            net = 100.0 * (self.miou_fp32 - miou)
        else:
            losses = None
            drop = 100.0 * (1.0 - agreement)
        bound = max(float(drop), self._bootstrap_bound(losses, agree, pixels))
        return Measurement(float(drop), None if miou is None else float(miou), float(agreement), bound, net)

    def _matrices(self, predictions: Sequence[np.ndarray], losses_only: bool = False) -> np.ndarray:
        """One confusion matrix per plan image (N x C x C), scored at the label size as score() does; losses_only:
        where a prediction is right and the FP32 reference wrong, the reference's label is scored instead."""
        out = []
        refs = self._reference_at_labels if losses_only else [None] * len(predictions)
        for pred, ref, (_, labels) in zip(predictions, refs, self.images.items, strict=True):
            pred = at_labels(pred, labels)
            if ref is not None:
                pred = losses_only_labels(pred, ref, labels)
            cm = ConfusionMatrix(self.images.num_classes, self.images.ignore_index)
            cm.update(labels, pred)
            out.append(cm.matrix)
        return np.asarray(out, np.float64)

    def _bootstrap_bound(self, losses: np.ndarray | None, agree: np.ndarray, pixels: np.ndarray) -> float:
        """The CONFIDENCE quantile of the drop over RESAMPLES paired resamples (with replacement) of the images;
        losses: the lowered model's per-image losses-only matrices (miou)."""
        w = self._resample_counts
        if losses is not None:
            ref = _mean_iou(np.einsum("bn,nij->bij", w, self._reference_matrices))
            low = _mean_iou(np.einsum("bn,nij->bij", w, losses))
            drops = 100.0 * (ref - low)
        else:
            drops = 100.0 * (1.0 - (w @ agree) / (w @ pixels))
        drops = drops[np.isfinite(drops)]
        return float(np.quantile(drops, CONFIDENCE)) if drops.size else float("nan")


def at_labels(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A prediction at its label map's size (nearest), as score() scores it."""
    return pred if pred.shape == labels.shape[:2] else resize_labels(pred, labels.shape[:2])


def losses_only_labels(pred: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`pred` with INT8's gains undone: where it is right and the FP32 `reference` wrong, the reference's label
    (all three at the label size)."""
    return np.where((pred == labels) & (reference != labels), reference, pred)


def _mean_iou(matrices: np.ndarray) -> np.ndarray:
    """Mean IoU of each of a stack of confusion matrices (B x C x C), as metrics_from_matrix computes it."""
    tp = np.diagonal(matrices, axis1=1, axis2=2)
    union = matrices.sum(axis=2) + matrices.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample where no class is present: NaN, dropped
        return np.nanmean(iou, axis=1)


def higher_precision(target: str) -> str:
    """What a group the plan keeps out of INT8 becomes: FP16 for TensorRT (strongly typed, no Q/DQ around it),
    FP32 for ONNX Runtime (its CPU kernels have no faster FP16 path)."""
    return "fp16" if target == "tensorrt" else "fp32"


def lower_variant(prepared: Any, ranges: dict[str, TensorRange], target: str, exclude_nodes: Sequence[str],
                  higher: Sequence[str] = (), weight_bits: int | None = None,
                  rounded: dict[str, Any] | None = None) -> Any:  # fmt: skip
    """`prepared` (not modified) lowered to INT8 except `exclude_nodes` (FP32) and `higher` (the plan's kept
    nodes: unquantized, and FP16 where higher_precision(target) says so); rounded: GPTQ weights (int8.quantize_qdq)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(prepared)  # quantize_qdq rewrites the graph it is given
    lowered = int8.quantize_qdq(model, ranges, target, sorted(set(exclude_nodes) | set(higher)), weight_bits, rounded)
    if higher and higher_precision(target) == "fp16":
        lowered = fp16.half_nodes(lowered, higher)
    return lowered


class Evaluator(Judge):
    """Scores lowered variants of one calibrated graph against the FP32 model on the plan images, each lowered the
    way quantize will write it (lower_variant)."""

    def __init__(self, fp32: str | Path | bytes, prepared: Any, ranges: dict[str, TensorRange], target: str,
                 images: PlanImages, size: tuple[int, int] | None, card: ModelCard, metric: str,
                 weight_bits: int | None = None, rounded: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(fp32, images, size, card, metric)
        self.prepared, self.ranges, self.target, self.weight_bits = prepared, ranges, target, weight_bits
        self.rounded = rounded

    def lower(self, exclude_nodes: Sequence[str], higher: Sequence[str] = ()) -> Any:
        return lower_variant(self.prepared, self.ranges, self.target, exclude_nodes, higher, self.weight_bits,
                             self.rounded)  # fmt: skip

    def measure(self, exclude_nodes: Sequence[str], higher: Sequence[str] = ()) -> Measurement:
        """exclude_nodes stay FP32; higher: kept by the plan (FP16 for TensorRT, see higher_precision)."""
        return self.measure_model(self.lower(exclude_nodes, higher))


def node_costs(prepared: Any, feed: np.ndarray, input_name: str, runs: int = 3) -> dict[str, float]:
    """Microseconds per node of the FP32 graph from ONNX Runtime's profiler (graph optimisations off, so every
    node keeps its name), averaged over `runs` after one warm-up."""
    import onnxruntime as ort

    with scratch_dir("profile") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "prof")
        session = ort.InferenceSession(prepared.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            session.run(None, {input_name: feed})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name.removesuffix("_kernel_time")
            totals[node] = totals.get(node, 0.0) + float(e.get("dur", 0))
    return {k: v / (runs + 1) for k, v in totals.items()}


@dataclass
class Sensitivity:
    group: Group
    only: Measurement  # this group alone quantized
    all_but: Measurement  # everything quantizable quantized except this group
    cost_share: float  # share of FP32 CPU time spent in this group's nodes
    gain: float = 0.0  # full-INT8 drop minus all_but drop: what keeping this group in FP32 recovers
    score: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.score = max(self.only.drop, self.gain)

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group.name, "op_type": self.group.op_type, "nodes": list(self.group.nodes),
                "only_quantized": self.only.to_dict(), "all_but_quantized": self.all_but.to_dict(),
                "gain_in_fp32": self.gain, "sensitivity": self.score, "latency_share": self.cost_share}  # fmt: skip


def measure_all(ev: Evaluator, candidates: Sequence[Group], base_exclude: Sequence[str], full: Measurement,
                costs: dict[str, float], say: Callable[[str], None] = log.info) -> list[Sensitivity]:  # fmt: skip
    """Both views for every candidate group (2 lowerings + 2 scorings each), with progress through `say`."""
    every = {n.name for n in ev.prepared.graph.node if n.name}
    total = sum(costs.values()) or 1.0
    out = []
    for k, g in enumerate(candidates, 1):
        only = ev.measure(sorted(every - set(g.nodes)))
        all_but = ev.measure(base_exclude, g.nodes)  # as the plan would keep it
        share = sum(costs.get(n, 0.0) for n in g.nodes) / total
        s = Sensitivity(g, only, all_but, share, gain=full.drop - all_but.drop)
        say(f"  sensitivity {k}/{len(candidates)} {g.name} ({g.op_type}): alone {only.drop:+.2f}, "
            f"all but it {all_but.drop:+.2f} points ({ev.metric}); {100 * share:.1f}% of FP32 time")
        out.append(s)
    return out
