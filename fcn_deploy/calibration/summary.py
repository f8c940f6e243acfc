"""How much a lowered model differs from its FP32 parent, measured on held-out images with ONNX Runtime CPU.

Pixel agreement of the label maps, mean IoU of both models and their difference (when the images have masks,
through `fcn_deploy.core.metrics`, the project's one metric implementation), and the CPU latency ratio (median of
interleaved runs, so both models see the same machine load).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from fcn_deploy.calibration.images import ImageSet
from fcn_deploy.core.card import Normalization
from fcn_deploy.core.metrics import ConfusionMatrix, pixel_agreement
from fcn_deploy.core.preprocess import preprocess


def cpu_session(model: bytes | str, threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def label_map(session: Any, feed: dict[str, np.ndarray], output: str | None) -> np.ndarray:
    """N x H x W labels: the named labels output, or the argmax of a score output."""
    name = output or session.get_outputs()[0].name
    (out,) = session.run([name], feed)
    if out.ndim == 4:
        return out.argmax(axis=1)
    return out.astype(np.int64)


def labels_output(outputs: Sequence[tuple[str, str]]) -> str | None:
    """Prefer the labels output, else logits/probs (argmax); None = the graph's first output."""
    for kind in ("labels", "logits", "probs"):
        for name, k in outputs:
            if k == kind:
                return name
    return None


def latency_ms(sessions: Sequence[Any], feed: dict[str, np.ndarray], runs: int, warmup: int = 2) -> list[float]:
    """Median milliseconds per session, runs interleaved (A B A B ...) so load drift hits both alike."""
    for s in sessions:
        for _ in range(warmup):
            s.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for k, s in enumerate(sessions):
            t0 = time.perf_counter()
            s.run(None, feed)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def compare(
    fp32_model: bytes | str,
    lowered_model: bytes | str,
    images: ImageSet,
    norm: Normalization,
    input_name: str,
    output: str | None,
    shape: tuple[int, int] | None,
    latency_runs: int = 5,
    latency_shape: tuple[int, int] | None = None,
    threads: int | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Agreement and (with masks) mean IoU of FP32 vs lowered on `images`, plus the CPU latency ratio."""
    ref, low = cpu_session(fp32_model, threads), cpu_session(lowered_model, threads)
    masks = images.has_masks
    cms = [ConfusionMatrix(images.num_classes, images.ignore_index) for _ in range(2)] if masks else []
    agree_pixels, total_pixels, count = 0, 0, 0
    first_feed = None
    for sample in images:
        feed = {input_name: preprocess(sample.image, norm, shape)}
        first_feed = first_feed or feed
        a, b = label_map(ref, feed, output)[0], label_map(low, feed, output)[0]
        agree_pixels += round(pixel_agreement(a, b) * a.size)
        total_pixels += a.size
        count += 1
        if masks and sample.labels is not None:
            from fcn_deploy.core.preprocess import resize_labels

            target = resize_labels(sample.labels, a.shape)
            cms[0].update(target, a)
            cms[1].update(target, b)
    summary: dict[str, Any] = {"eval_images": count, "eval_source": images.source}
    if count == 0:
        return summary
    summary["pixel_agreement"] = agree_pixels / total_pixels
    if masks:
        m_ref, m_low = (cm.compute(class_names) for cm in cms)
        summary.update(
            miou_fp32=m_ref["mean_iou"],
            miou_lowered=m_low["mean_iou"],
            miou_delta=m_low["mean_iou"] - m_ref["mean_iou"],
            per_class_iou_fp32=m_ref["per_class_iou"],
            per_class_iou_lowered=m_low["per_class_iou"],
        )
    if latency_runs > 0:
        feed = first_feed
        if latency_shape is not None:
            feed = {input_name: np.random.default_rng(0).standard_normal((1, 3, *latency_shape), np.float32)}
        t_ref, t_low = latency_ms([ref, low], feed, latency_runs)
        summary.update(
            latency_shape=list(feed[input_name].shape[2:]),
            latency_runs=latency_runs,
            latency_ms_fp32=t_ref,
            latency_ms_lowered=t_low,
            latency_ratio=t_low / t_ref,
        )
    return summary
