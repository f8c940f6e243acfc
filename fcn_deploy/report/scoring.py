"""The report's rows: every planned backend x precision x size scored with fcn_deploy.core.scoring.score on the
same images (predictions brought to the label's resolution), agreement with the ONNX Runtime FP32 reference at
the network size, and latency on the first image, every row of a size timed in interleaved rounds
(fcn_deploy.report.latency) while all of them are open."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.preprocess import preprocess, resize_labels
from fcn_deploy.core.scoring import score
from fcn_deploy.core.shapes import format_hw
from fcn_deploy.report.inputs import Inputs, ReportConfig
from fcn_deploy.report.latency import interleaved
from fcn_deploy.report.models import RowPlan
from fcn_deploy.report.write import make_row


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    predictions: list[np.ndarray]  # label maps at the network size, one per image
    batch: np.ndarray  # the first image at this size, preprocessed for the backend: what its latency is timed on


@dataclass
class Scored:
    rows: list[dict]
    sample_predictions: dict[str, list[np.ndarray]]  # "FP32"/"FP16"/"INT8" -> label maps at the first size
    sample_order: list[float]  # per-image INT8 agreement with FP32 (else FP32 accuracy): lowest first is shown


def open_row_backend(plan: RowPlan, device: str) -> Backend:
    from fcn_deploy.chain.backends import open_backend

    if plan.backend == "torch":
        # The trainer's policy: one thread when other jobs already fill every core (PyTorch's threads otherwise
        # wait on each other at every layer: 890 ms instead of 70 ms measured for the CamVid model here).
        import torch

        from fcn_deploy.training.device import auto_threads

        threads = auto_threads()
        if threads is not None:
            torch.set_num_threads(threads)
    return open_backend(plan.model, backend=plan.backend, device="cuda" if plan.backend == "tensorrt" else device,
                        precision="bf16" if plan.precision == "bf16" else None)  # fmt: skip


def evaluate(backend: Backend, inp: Inputs, size: tuple[int, int], desc: str) -> Evaluation:
    backend.input_sizes.check(size, desc)  # e.g. an engine profile that misses the size: a clear error
    result = score(backend, inp.dataset, size, indices=range(inp.count), keep_predictions=True, progress=desc)
    first, _ = inp.dataset[0]
    return Evaluation(result.metrics, result.predictions, preprocess(first, backend.card.normalization, size))


def agreement(preds: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> tuple[float, list[float]]:
    """Pixel-weighted agreement over all images, and per image."""
    from fcn_deploy.core.metrics import pixel_agreement

    per_image = [pixel_agreement(p, r) for p, r in zip(preds, ref, strict=True)]
    same = sum(float(np.count_nonzero(p == r)) for p, r in zip(preds, ref, strict=True))
    return same / sum(p.size for p in preds), per_image


def model_bytes(path: Path) -> int:
    """The file plus its external-data file when the ONNX keeps weights beside it."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def row_bytes(plan: RowPlan) -> int:
    if plan.backend == "torch":
        from fcn_deploy.training.checkpoint import load_checkpoint

        state = load_checkpoint(plan.model)["state_dict"]  # weights only: the .pt also holds optimiser state
        return int(sum(t.numel() * t.element_size() for t in state.values()))
    return model_bytes(plan.model)


def ok_row(plan: RowPlan, size_text: str, ev: Evaluation, agree: float, lat: dict[str, float]) -> dict:
    m = ev.metrics
    return make_row(
        plan.backend, plan.precision, size_text, mean_iou=m["mean_iou"], pixel_accuracy=m["pixel_accuracy"],
        mean_accuracy=m["mean_accuracy"], fw_iou=m["fw_iou"], agreement_with_fp32=agree,
        latency_ms_median=lat["median"], latency_ms_p95=lat["p95"], latency_ms_mean=lat["mean"],
        latency_ms_min=lat["min"], latency_ms_p99=lat["p99"], latency_cv_pct=lat["cv_pct"],
        model_bytes=row_bytes(plan), model=str(plan.model), per_class_iou=m["per_class_iou"],
        **auto_plan_mark(plan.model),
    )  # fmt: skip


def auto_plan_mark(model: Any) -> dict[str, Any]:
    """The row's mark for a model lowered by `--auto`: the groups its plan kept in FP32 and the plan's drop."""
    if not str(model).endswith(".onnx"):
        return {}
    from fcn_deploy.core.card import ModelCard
    from fcn_deploy.core.onnx_io import load_onnx

    try:
        plan = ModelCard.from_onnx(load_onnx(Path(model)), str(model)).provenance.get("lowering", {}).get("auto_plan")
    except FcnDeployError:
        return {}
    if not plan:
        return {}
    return {"auto_plan_kept_groups": plan["kept_groups"], "auto_plan_metric": plan["metric"],
            "auto_plan_max_drop": plan["max_drop"], "auto_plan_drop": (plan.get("final") or {}).get("drop"),
            "auto_plan_kept_precision": plan.get("kept_precision", "fp32")}  # FP32 in plans older than the field


def score_rows(cfg: ReportConfig, inp: Inputs, plans: list[RowPlan], fp32: Path, say: Any) -> Scored:
    rows: list[dict] = []
    samples: dict[str, list[np.ndarray]] = {}
    order: list[float] = []
    ref_key = ("onnxruntime", "fp32")
    for s_index, size in enumerate(inp.sizes):
        size_text = format_hw(size)
        entries: list[dict | RowPlan] = []  # a finished (skipped/failed) row, or a plan whose row waits for latency
        with ExitStack() as open_backends:  # every row's backend stays open until the size's rows are timed
            ref_backend = open_backends.enter_context(open_row_backend(RowPlan(*ref_key, fp32), cfg.device))
            evaluations = {ref_key: evaluate(ref_backend, inp, size, f"reference {size_text}")}
            backends = {ref_key: ref_backend}
            for plan in plans:
                label = f"{plan.backend} {plan.precision} {size_text}"
                if plan.model is None:
                    entries.append(make_row(plan.backend, plan.precision, size_text, "skipped", plan.reason))
                    continue
                key = (plan.backend, plan.precision)
                try:
                    if key not in evaluations:
                        t = time.perf_counter()
                        backend = open_backends.enter_context(open_row_backend(plan, cfg.device))
                        evaluations[key] = evaluate(backend, inp, size, label)
                        backends[key] = backend
                        say(f"  {label}: done in {time.perf_counter() - t:.1f} s")
                except MissingDependencyError as e:
                    entries.append(make_row(plan.backend, plan.precision, size_text, "skipped", str(e)))
                    continue
                except FcnDeployError as e:
                    entries.append(make_row(plan.backend, plan.precision, size_text, "failed", str(e)))
                    say(f"  {label}: failed: {e}")
                    continue
                entries.append(plan)
            t = time.perf_counter()
            latency = interleaved({k: (b, evaluations[k].batch) for k, b in backends.items()}, cfg)
            say(f"  latency {size_text}: {len(backends)} backend(s) in {cfg.latency_rounds} interleaved rounds, "
                f"{time.perf_counter() - t:.1f} s")
        ref = evaluations[ref_key]
        for entry in entries:
            if isinstance(entry, dict):
                rows.append(entry)
                continue
            plan, key = entry, (entry.backend, entry.precision)
            lat = latency[key]
            if isinstance(lat, str):
                rows.append(make_row(plan.backend, plan.precision, size_text, "failed", lat))
                say(f"  {plan.backend} {plan.precision} {size_text}: failed while timed: {lat}")
                continue
            ev = evaluations[key]
            agree, per_image = agreement(ev.predictions, ref.predictions)
            rows.append(ok_row(plan, size_text, ev, agree, lat))
            if s_index == 0 and plan.backend == "onnxruntime" and plan.precision != "fp32":
                samples[plan.precision.upper()] = ev.predictions
                if plan.precision == "int8":
                    order = per_image
        if s_index == 0:
            samples = {"FP32": ref.predictions, **samples}
            if not order:  # no INT8: show where FP32 is least accurate instead
                order = [float(np.mean(resize_labels(p, g.shape) == g))
                         for p, (_, g) in zip(ref.predictions, map(inp.dataset.__getitem__, range(inp.count)),
                                              strict=True)]  # fmt: skip
    return Scored(rows, samples, order)
