"""How much a lowered model differs from its FP32 parent, measured on held-out images with ONNX Runtime CPU.

Both models run as runtime backends (fcn_deploy.runtime.ort_backend) and are scored by the one score()
(fcn_deploy.core.scoring), so the mean IoU printed here is the one `evaluate` and `report` print for the same
model and images: predictions are brought to the label's resolution. Also: pixel agreement of the two label maps
at the network size, and the CPU latency ratio (median of interleaved runs, so both see the same machine load).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.calibration.images import ImageSet
from fcn_deploy.core.backend import Backend
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.metrics import pixel_agreement
from fcn_deploy.core.preprocess import preprocess
from fcn_deploy.core.scoring import score_pairs
from fcn_deploy.runtime.ort_backend import OrtBackend


def latency_ms(backends: Sequence[Backend], batch: np.ndarray, runs: int, warmup: int = 2, min_s: float = 0.5,
               max_runs: int = 500) -> list[float]:  # fmt: skip
    """Median milliseconds per backend, runs interleaved (A B A B ...) so load drift hits both alike: at least
    `runs` rounds and at least `min_s` seconds in all (up to `max_runs` rounds), since a handful of runs on a shared
    machine swung the ratio from x0.3 to x20."""
    for b in backends:
        for _ in range(warmup):
            b.run(batch)
    times: list[list[float]] = [[] for _ in backends]
    started = time.perf_counter()
    rounds = 0
    while rounds < runs or (time.perf_counter() - started < min_s and rounds < max_runs):
        rounds += 1
        for k, b in enumerate(backends):
            t0 = time.perf_counter()
            b.run(batch)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def compare(
    fp32_model: str | Path,
    lowered_model: bytes,
    images: ImageSet,
    shape: tuple[int, int] | None,
    card: ModelCard | None = None,
    latency_runs: int = 5,
    latency_shape: tuple[int, int] | None = None,
    threads: int | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Agreement and (with masks) mean IoU of FP32 vs lowered on `images`, plus the CPU latency ratio.

    card: describes both models when they carry no model card (else each model's own card is used).
    """
    with (
        OrtBackend(fp32_model, threads=threads, card=card) as ref,
        OrtBackend(lowered_model, threads=threads, card=card) as low,
    ):
        return _compare(ref, low, images, shape, latency_runs, latency_shape, class_names)


def _compare(
    ref: Backend,
    low: Backend,
    images: ImageSet,
    shape: tuple[int, int] | None,
    latency_runs: int,
    latency_shape: tuple[int, int] | None,
    class_names: Sequence[str] | None,
) -> dict[str, Any]:
    first: list[np.ndarray] = []

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for sample in images:
            if not first:
                first.append(sample.image)
            yield sample.image, sample.labels

    s_ref, s_low = score_pairs(
        [ref, low], pairs(), shape, num_classes=images.num_classes, ignore_index=images.ignore_index,
        class_names=class_names, keep_predictions=True,
    )  # fmt: skip
    count = s_ref.metrics["num_images"]
    summary: dict[str, Any] = {"eval_images": count, "eval_source": images.source}
    if count == 0:
        return summary
    pixels = sum(a.size for a in s_ref.predictions)
    agree = sum(
        round(pixel_agreement(a, b) * a.size)
        for a, b in zip(s_ref.predictions, s_low.predictions, strict=True)
    )
    summary["pixel_agreement"] = agree / pixels
    if images.has_masks:
        m_ref, m_low = s_ref.metrics, s_low.metrics
        summary.update(
            miou_fp32=m_ref["mean_iou"],
            miou_lowered=m_low["mean_iou"],
            miou_delta=m_low["mean_iou"] - m_ref["mean_iou"],
            per_class_iou_fp32=m_ref["per_class_iou"],
            per_class_iou_lowered=m_low["per_class_iou"],
        )
    if latency_runs > 0:
        if latency_shape is not None:
            batch = np.random.default_rng(0).standard_normal((1, 3, *latency_shape), np.float32)
        else:
            batch = preprocess(first[0], ref.card.normalization, shape)
        t_ref, t_low = latency_ms([ref, low], batch, latency_runs)
        summary.update(
            latency_shape=list(batch.shape[2:]),
            latency_runs=latency_runs,
            latency_ms_fp32=t_ref,
            latency_ms_lowered=t_low,
            latency_ratio=t_low / t_ref,
        )
    return summary
