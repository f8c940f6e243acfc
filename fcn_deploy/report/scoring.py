"""The report's rows: every planned backend x precision x size scored with fcn_deploy.core.scoring.score on the
same images (predictions brought to the label's resolution), agreement with the ONNX Runtime FP32 reference at
the network size, and latency from fcn_deploy.profile on the first image."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.preprocess import preprocess, resize_labels
from fcn_deploy.core.scoring import score
from fcn_deploy.core.shapes import format_hw
from fcn_deploy.profile import ProfileConfig, profile_backend
from fcn_deploy.report.inputs import Inputs, ReportConfig
from fcn_deploy.report.models import RowPlan
from fcn_deploy.report.write import make_row


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    predictions: list[np.ndarray]  # label maps at the network size, one per image
    latency: dict[str, float]


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


def evaluate(backend: Backend, inp: Inputs, size: tuple[int, int], cfg: ReportConfig, desc: str) -> Evaluation:
    backend.input_sizes.check(size, desc)  # e.g. an engine profile that misses the size: a clear error
    result = score(backend, inp.dataset, size, indices=range(inp.count), keep_predictions=True, progress=desc)
    first, _ = inp.dataset[0]
    prof = profile_backend(
        backend,
        ProfileConfig(warmup_s=cfg.latency_warmup_s, iterations=cfg.latency_iterations,
                      duration_s=cfg.latency_duration_s),  # fmt: skip
        batch=preprocess(first, backend.card.normalization, size),
    )
    return Evaluation(result.metrics, result.predictions, prof.latency_ms)


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


def ok_row(plan: RowPlan, size_text: str, ev: Evaluation, agree: float) -> dict:
    m, lat = ev.metrics, ev.latency
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
    for s_index, size in enumerate(inp.sizes):
        size_text = format_hw(size)
        with open_row_backend(RowPlan("onnxruntime", "fp32", fp32), cfg.device) as ref_backend:
            ref = evaluate(ref_backend, inp, size, cfg, f"reference {size_text}")
        evaluations: dict[tuple[str, str], Evaluation] = {("onnxruntime", "fp32"): ref}
        for plan in plans:
            label = f"{plan.backend} {plan.precision} {size_text}"
            if plan.model is None:
                rows.append(make_row(plan.backend, plan.precision, size_text, "skipped", plan.reason))
                continue
            key = (plan.backend, plan.precision)
            try:
                if key not in evaluations:
                    t = time.perf_counter()
                    with open_row_backend(plan, cfg.device) as backend:
                        evaluations[key] = evaluate(backend, inp, size, cfg, label)
                    say(f"  {label}: done in {time.perf_counter() - t:.1f} s")
            except MissingDependencyError as e:
                rows.append(make_row(plan.backend, plan.precision, size_text, "skipped", str(e)))
                continue
            except FcnDeployError as e:
                rows.append(make_row(plan.backend, plan.precision, size_text, "failed", str(e)))
                say(f"  {label}: failed: {e}")
                continue
            ev = evaluations[key]
            agree, per_image = agreement(ev.predictions, ref.predictions)
            rows.append(ok_row(plan, size_text, ev, agree))
            if s_index == 0 and plan.backend == "onnxruntime" and plan.precision != "fp32":
                samples[plan.precision.upper() + (" auto" if "auto_plan_kept_groups" in rows[-1] else "")] = ev.predictions
                if plan.precision == "int8":
                    order = per_image
        if s_index == 0:
            samples = {"FP32": ref.predictions, **samples}
            if not order:  # no INT8: show where FP32 is least accurate instead
                order = [float(np.mean(resize_labels(p, g.shape) == g))
                         for p, (_, g) in zip(ref.predictions, map(inp.dataset.__getitem__, range(inp.count)),
                                              strict=True)]  # fmt: skip
    return Scored(rows, samples, order)
