"""`build_report(ReportConfig)`: build what is missing, evaluate every backend x precision x size on the same
images, and write report.md/json/csv, pareto.png, per_class.png and samples/.

Models live in OUTPUT/models/: `model.onnx` (FP32, exported from the checkpoint when one is given),
`model.int8.onnx` (Q/DQ for ONNX Runtime's int8 kernels), `model.fp16.onnx`, and where TensorRT exists
`model.int8-trt.onnx` (TensorRT's Q/DQ scheme) and one `model.PRECISION.engine` per precision whose profile covers
every requested size. A model already there is reused when its provenance names the same parent (sha256).

Every row is scored on the same images: the network sees each image resized to the row's size and its label map
is brought back to the image's own size (nearest) for the four metrics; agreement is the fraction of pixels whose
label equals the FP32 reference's at the network size. Latency is `fcn_deploy.profile` on the first image.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.core.atomic import sha256_file
from fcn_deploy.core.backend import Backend
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.preprocess import preprocess, resize_labels
from fcn_deploy.core.shapes import format_hw
from fcn_deploy.profile import ProfileConfig, environment, profile_backend
from fcn_deploy.report.write import make_row, sort_rows, write_report

PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("torch", "onnxruntime", "tensorrt")
NO_TENSORRT = "TensorRT not installed"


@dataclass(frozen=True)
class ReportConfig:
    output: Path
    dataset: str
    checkpoint: Path | None = None
    onnx: Path | None = None
    data_root: str | None = None
    split: str = "val"
    max_images: int | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    precisions: tuple[str, ...] = PRECISIONS
    backends: tuple[str, ...] = ("auto",)
    sizes: tuple[tuple[int, int], ...] | None = None  # default: the card's opt shape
    calib_images: int = 100
    calib_method: str = "entropy"
    latency_warmup_s: float = 0.5
    latency_duration_s: float = 2.0
    latency_iterations: int | None = None
    num_samples: int = 3
    device: str = "cpu"


def parse_choices(text: str | Sequence[str], allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """'fp32,int8' -> ('fp32', 'int8'), each checked against `allowed`, order kept, duplicates dropped."""
    items = [s.strip().lower() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not items:
        raise FcnDeployError(f"{what}: give at least one of {', '.join(allowed)}")
    for s in items:
        if s not in allowed:
            raise FcnDeployError(f"{what} {s!r}: unknown; choose from {', '.join(allowed)}")
    return tuple(dict.fromkeys(items))


def resolve_backends(requested: Sequence[str], has_checkpoint: bool) -> tuple[str, ...]:
    """'auto' means every backend: torch (with a checkpoint), onnxruntime, tensorrt (a skipped row if absent)."""
    if "auto" in requested:
        if len(requested) > 1:
            raise FcnDeployError("--backends auto cannot be combined with named backends; give one or the other")
        return (("torch",) if has_checkpoint else ()) + ("onnxruntime", "tensorrt")
    return tuple(requested)


def tensorrt_ready() -> str | None:
    """None when TensorRT and a GPU can be used, else the reason to show in the skipped rows."""
    from fcn_deploy.engine.trt_compat import tensorrt_available

    if not tensorrt_available():
        return NO_TENSORRT
    from fcn_deploy.profile import gpu_info

    if gpu_info() is None:
        return "no CUDA GPU visible (or cuda-python missing)"
    return None


def model_bytes(path: Path) -> int:
    """The file plus its external-data file when the ONNX keeps weights beside it."""
    total = path.stat().st_size
    data = path.with_name(path.name + ".data")
    return total + (data.stat().st_size if data.is_file() else 0)


def to_stderr(text: str) -> None:
    """The default progress sink: one line per step (what the user watches during a long report)."""
    print(text, file=sys.stderr, flush=True)


Progress = Callable[[str], None]


# --- input checks: all before anything is written ---------------------------------------------------------------
def check_output_dir(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise FcnDeployError(f"--output {output}: is a file, not a directory; give a directory for the report")
    parent = output if output.exists() else next((p for p in output.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise FcnDeployError(f"--output {output}: {parent} is not writable; choose a writable directory")


def check_sizes(sizes: Sequence[tuple[int, int]], card: ModelCard, source: str) -> None:
    """Every size inside the model's min/max profile (the range engines are built for and exports are checked on)."""
    lo, hi = tuple(card.min_shape), tuple(card.max_shape)
    for hw in sizes:
        if not (lo[0] <= hw[0] <= hi[0] and lo[1] <= hw[1] <= hi[1]):
            raise FcnDeployError(
                f"--sizes {format_hw(hw)}: outside the profile of {source} (min {format_hw(lo)}, max "
                f"{format_hw(hi)}); choose sizes in that range or re-export with --min-shape/--max-shape"
            )


def card_of_checkpoint(path: Path) -> ModelCard:
    from fcn_deploy.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    return ModelCard.from_dict(ckpt["model_card"], str(path))


def card_of_onnx(path: Path) -> ModelCard:
    from fcn_deploy.core.onnx_io import load_onnx

    return ModelCard.from_onnx(load_onnx(path), str(path))


def load_dataset(cfg: ReportConfig, card: ModelCard):
    from fcn_deploy.core.datasets import build_dataset

    options = dict(cfg.dataset_options)
    if cfg.dataset == "synthetic" and not options:
        # The synthetic data the model was trained on (classes and size from its training config).
        train_cfg = card.provenance.get("train_config") or {}
        if train_cfg.get("dataset") == "synthetic":
            options = dict(train_cfg.get("dataset_options") or {})
        options.setdefault("num_classes", card.num_classes)
    ds = build_dataset(cfg.dataset, cfg.data_root, cfg.split, **options)
    if not ds.has_masks:
        raise FcnDeployError(
            f"dataset {cfg.dataset} split {cfg.split}: has no masks (ground-truth label maps), so accuracy cannot be "
            "measured; point --data-root at a dataset with masks"
        )
    if len(ds) == 0:
        raise FcnDeployError(f"dataset {cfg.dataset} split {cfg.split}: has no images")
    if ds.num_classes != card.num_classes:
        raise FcnDeployError(
            f"dataset {cfg.dataset} has {ds.num_classes} classes but the model has {card.num_classes}; "
            "evaluate the model on the dataset it was trained for"
        )
    return ds, options


# --- building the models -----------------------------------------------------------------------------------------
def _lowered_parent(path: Path) -> str | None:
    """The parent sha256 a lowered ONNX records, or None if it cannot be read."""
    try:
        card = card_of_onnx(path)
    except FcnDeployError:
        return None
    return (card.provenance.get("lowering") or {}).get("parent_onnx_sha256")


def export_fp32(checkpoint: Path, output: Path, sizes: Sequence[tuple[int, int]], say: Progress) -> Path:
    """OUTPUT/models/model.onnx from the checkpoint (reused when it was exported from this very checkpoint)."""
    ckpt_sha = sha256_file(checkpoint)
    if output.is_file():
        try:
            if card_of_onnx(output).checkpoint_sha256 == ckpt_sha:
                say(f"  reusing {output} (exported from this checkpoint)")
                return output
        except FcnDeployError:
            pass
    from fcn_deploy.export import ExportOptions, export_onnx, model_for_export

    say(f"  exporting {checkpoint} -> {output}")
    model, card, _ = model_for_export(checkpoint)
    lo = (min(min(s[0] for s in sizes), card.min_shape[0]), min(min(s[1] for s in sizes), card.min_shape[1]))
    hi = (max(max(s[0] for s in sizes), card.max_shape[0]), max(max(s[1] for s in sizes), card.max_shape[1]))
    opt = card.training_resolution or sizes[0]
    report = export_onnx(model, card, output, ExportOptions(opt_shape=tuple(opt), min_shape=lo, max_shape=hi))
    return report.output


def lower(
    fp32: Path, precision: str, target: str, output: Path, cfg: ReportConfig, calib_split: str,
    sizes: Sequence[tuple[int, int]], say: Progress,
) -> Path:
    """FP16 / INT8 ONNX through fcn_deploy.calibration.api (reused when it was lowered from this FP32 file)."""
    parent_sha = sha256_file(fp32)
    if output.is_file() and _lowered_parent(output) == parent_sha:
        say(f"  reusing {output}")
        return output
    from fcn_deploy.calibration.api import QuantizeConfig, quantize

    say(f"  lowering to {precision} ({target}) on {cfg.calib_images} {cfg.dataset}:{calib_split} images -> {output}")
    qc = QuantizeConfig(
        model=fp32, precision=precision, output=output, target=target,
        calib_dataset=f"{cfg.dataset}:{calib_split}",
        data_root=Path(cfg.data_root) if cfg.data_root else None, num_images=cfg.calib_images,
        method=cfg.calib_method, calib_shapes=tuple(tuple(s) for s in sizes),
        cache=output.with_name(output.name + ".calib.json"), eval_images=4, latency_runs=1,
    )
    t = time.perf_counter()
    result = quantize(qc)
    say(f"  {result.output} written in {time.perf_counter() - t:.1f} s")
    return Path(result.output)


def build_engine(onnx_path: Path, precision: str, output: Path, sizes: Sequence[tuple[int, int]], say: Progress) -> Path:
    """One TensorRT engine per precision, its profile covering every requested size."""
    from fcn_deploy.engine.build import BuildOptions, engine_from_onnx
    from fcn_deploy.engine.profile_shapes import Profile, validate

    card = card_of_onnx(onnx_path)
    lo = (min(s[0] for s in sizes), min(s[1] for s in sizes))
    hi = (max(s[0] for s in sizes), max(s[1] for s in sizes))
    profile = validate(Profile(card.input_name, (1, 1, 1), lo, tuple(sizes[0]), hi))
    say(f"  building TensorRT {precision} engine {output} ({profile.describe()})")
    engine_from_onnx(
        onnx_path, output, BuildOptions(profile=profile), card=card, precision=precision,
        provenance={"built_by": "fcn-deploy report"}, source_onnx_sha256=sha256_file(onnx_path),
        rebuild_command=f"fcn-deploy build-engine {onnx_path} --output {output}",
    )
    return output


# --- evaluation ---------------------------------------------------------------------------------------------------
@dataclass
class RowPlan:
    backend: str
    precision: str
    model: Path | None = None
    reason: str = ""


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    predictions: list[np.ndarray]  # label maps at the network size, one per image
    latency: dict[str, float]


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
    dev = "cuda" if plan.backend == "tensorrt" else device
    return open_backend(plan.model, backend=plan.backend, device=dev)


def evaluate(
    backend: Backend, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], size: tuple[int, int],
    class_names: Sequence[str], ignore_index: int | None, cfg: ReportConfig, desc: str,
) -> Evaluation:
    from tqdm import tqdm

    from fcn_deploy.core.metrics import ConfusionMatrix

    cm = ConfusionMatrix(len(class_names), ignore_index)
    preds = []
    norm = backend.card.normalization
    for image, gt in tqdm(list(zip(images, labels, strict=True)), desc=desc, leave=False, file=sys.stderr,
                          disable=not sys.stderr.isatty()):
        pred = np.asarray(backend.run(preprocess(image, norm, size))["labels"][0])
        preds.append(pred)
        cm.update(gt, resize_labels(pred, gt.shape[:2]))
    metrics = cm.compute(class_names)
    batch = preprocess(images[0], norm, size)
    prof = profile_backend(
        backend,
        ProfileConfig(warmup_s=cfg.latency_warmup_s, iterations=cfg.latency_iterations,
                      duration_s=cfg.latency_duration_s),
        batch=batch,
    )
    return Evaluation(metrics, preds, prof.latency_ms)


def agreement(preds: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> tuple[float, list[float]]:
    """Pixel-weighted agreement over all images, and per image."""
    from fcn_deploy.core.metrics import pixel_agreement

    per_image = [pixel_agreement(p, r) for p, r in zip(preds, ref, strict=True)]
    same = sum(float(np.count_nonzero(p == r)) for p, r in zip(preds, ref, strict=True))
    total = sum(p.size for p in preds)
    return same / total, per_image


@dataclass
class ReportResult:
    output: Path
    rows: list[dict]
    files: dict[str, Path]
    meta: dict[str, Any]


@dataclass
class Inputs:
    """Everything build_report needs, checked before anything is written."""

    source: Path
    card: ModelCard
    precisions: tuple[str, ...]
    backends: tuple[str, ...]
    sizes: list[tuple[int, int]]
    dataset: Any
    dataset_options: dict[str, Any]
    count: int
    trt_reason: str | None


def check_inputs(cfg: ReportConfig) -> Inputs:
    if (cfg.checkpoint is None) == (cfg.onnx is None):
        raise FcnDeployError("give exactly one model: --checkpoint CKPT or --onnx MODEL")
    precisions = parse_choices(cfg.precisions, PRECISIONS, "--precisions")
    backends = resolve_backends(parse_choices(cfg.backends, ("auto", *BACKENDS), "--backends"),
                                cfg.checkpoint is not None)
    if cfg.max_images is not None and cfg.max_images < 1:
        raise FcnDeployError(f"--max-images {cfg.max_images}: must be at least 1")
    if cfg.device not in ("cpu", "cuda"):
        raise FcnDeployError(f"--device {cfg.device!r}: choose cpu or cuda")
    if cfg.device == "cuda":  # the FP32 reference runs on ONNX Runtime: refuse before anything is written
        import onnxruntime

        from fcn_deploy.runtime.ort_backend import choose_providers

        choose_providers("cuda", onnxruntime.get_available_providers())
    check_output_dir(Path(cfg.output))
    source = Path(cfg.checkpoint or cfg.onnx)
    if not source.is_file():
        raise FcnDeployError(f"{source}: no such file; check the path")
    card = card_of_checkpoint(source) if cfg.checkpoint else card_of_onnx(source)
    if cfg.onnx is not None and card.precision != "fp32":
        raise FcnDeployError(
            f"{source}: is a {card.precision} model; pass the FP32 ONNX (the report builds FP16/INT8 from it)"
        )
    sizes = [tuple(s) for s in (cfg.sizes or (tuple(card.opt_shape),))]
    if cfg.onnx is not None:  # a checkpoint is exported with a profile that covers the sizes
        check_sizes(sizes, card, str(source))
    ds, ds_options = load_dataset(cfg, card)
    count = len(ds) if cfg.max_images is None else min(cfg.max_images, len(ds))
    trt_reason = tensorrt_ready() if "tensorrt" in backends else None
    return Inputs(source, card, precisions, backends, sizes, ds, ds_options, count, trt_reason)


def build_models(cfg: ReportConfig, inp: Inputs, models: Path, say: Progress) -> tuple[Path, dict]:
    """The FP32 ONNX and (backend, precision) -> lowered ONNX path, or the reason it could not be built."""
    fp32 = export_fp32(inp.source, models / "model.onnx", inp.sizes, say) if cfg.checkpoint else inp.source
    calib_split = "train" if cfg.split != "train" else "val"  # never calibrate on the images being scored
    built: dict[tuple[str, str], Path | str] = {("onnxruntime", "fp32"): fp32, ("tensorrt", "fp32"): fp32}
    targets = [b for b in ("onnxruntime", "tensorrt") if b in inp.backends and not (b == "tensorrt" and inp.trt_reason)]
    for precision in (p for p in inp.precisions if p != "fp32"):
        for target in targets:
            if precision == "fp16" and ("onnxruntime", "fp16") in built:  # FP16 is the same graph for both
                built[(target, precision)] = built[("onnxruntime", "fp16")]
                continue
            suffix = f"{precision}-trt" if (precision == "int8" and target == "tensorrt") else precision
            try:
                built[(target, precision)] = lower(
                    fp32, precision, target, models / f"model.{suffix}.onnx", cfg, calib_split, inp.sizes, say
                )
            except FcnDeployError as e:
                built[(target, precision)] = f"lowering failed: {e}"
                say(f"  {precision} ({target}) failed: {e}")
    return fp32, built


def plan_rows(cfg: ReportConfig, inp: Inputs, built: dict, models: Path, say: Progress) -> list[RowPlan]:
    """One plan per backend x precision: the model file to run, or the reason the row is skipped."""
    plans: list[RowPlan] = []
    for backend in inp.backends:
        for precision in inp.precisions:
            if backend == "torch":
                if precision != "fp32":
                    plans.append(RowPlan(backend, precision, reason="PyTorch eager is the FP32 reference only"))
                elif cfg.checkpoint is None:
                    plans.append(RowPlan(backend, precision, reason="needs --checkpoint (PyTorch eager row)"))
                else:
                    plans.append(RowPlan(backend, precision, inp.source))
                continue
            if backend == "tensorrt" and inp.trt_reason is not None:
                plans.append(RowPlan(backend, precision, reason=inp.trt_reason))
                continue
            model = built.get((backend, precision))
            if isinstance(model, str):
                plans.append(RowPlan(backend, precision, reason=model))
            elif backend == "tensorrt":
                engine = models / f"model.{precision}.engine"
                try:
                    plans.append(RowPlan(backend, precision, build_engine(model, precision, engine, inp.sizes, say)))
                except FcnDeployError as e:
                    plans.append(RowPlan(backend, precision, reason=f"engine build failed: {e}"))
            else:
                plans.append(RowPlan(backend, precision, model))
    return plans


@dataclass
class Scored:
    rows: list[dict]
    images: list[np.ndarray]
    labels: list[np.ndarray]
    sample_predictions: dict[str, list[np.ndarray]]  # "FP32"/"FP16"/"INT8" -> label maps at the first size
    sample_order: list[float]  # per-image INT8 agreement with FP32 (else FP32 accuracy): lowest first is shown


def score_rows(cfg: ReportConfig, inp: Inputs, plans: list[RowPlan], fp32: Path, say: Progress) -> Scored:
    images, labels = [], []
    for i in range(inp.count):
        image, gt = inp.dataset[i]
        images.append(image)
        labels.append(gt)
    class_names, ignore = list(inp.card.class_names), inp.dataset.ignore_index
    rows: list[dict] = []
    samples: dict[str, list[np.ndarray]] = {}
    order: list[float] = []
    for s_index, size in enumerate(inp.sizes):
        size_text = format_hw(size)
        with open_row_backend(RowPlan("onnxruntime", "fp32", fp32), cfg.device) as ref_backend:
            ref = evaluate(ref_backend, images, labels, size, class_names, ignore, cfg, f"reference {size_text}")
        evaluations: dict[tuple[str, str], Evaluation] = {("onnxruntime", "fp32"): ref}
        for plan in plans:
            label = f"{plan.backend} {plan.precision} {size_text}"
            if plan.model is None:
                rows.append(make_row(plan.backend, plan.precision, size_text, "skipped", plan.reason))
                continue
            try:
                if (plan.backend, plan.precision) not in evaluations:
                    t = time.perf_counter()
                    with open_row_backend(plan, cfg.device) as backend:
                        if plan.backend == "tensorrt":
                            backend_check_profile(backend, size)
                        evaluations[(plan.backend, plan.precision)] = evaluate(
                            backend, images, labels, size, class_names, ignore, cfg, label)
                    say(f"  {label}: done in {time.perf_counter() - t:.1f} s")
                ev = evaluations[(plan.backend, plan.precision)]
            except MissingDependencyError as e:
                rows.append(make_row(plan.backend, plan.precision, size_text, "skipped", str(e)))
                continue
            except FcnDeployError as e:
                rows.append(make_row(plan.backend, plan.precision, size_text, "failed", str(e)))
                say(f"  {label}: failed: {e}")
                continue
            agree, per_image = agreement(ev.predictions, ref.predictions)
            rows.append(make_row(
                plan.backend, plan.precision, size_text,
                mean_iou=ev.metrics["mean_iou"], pixel_accuracy=ev.metrics["pixel_accuracy"],
                mean_accuracy=ev.metrics["mean_accuracy"], fw_iou=ev.metrics["fw_iou"],
                agreement_with_fp32=agree, latency_ms_median=ev.latency["median"], latency_ms_p95=ev.latency["p95"],
                latency_ms_mean=ev.latency["mean"], latency_ms_min=ev.latency["min"],
                latency_ms_p99=ev.latency["p99"], latency_cv_pct=ev.latency["cv_pct"],
                model_bytes=_row_bytes(plan), model=str(plan.model), per_class_iou=ev.metrics["per_class_iou"],
            ))
            if s_index == 0 and plan.backend == "onnxruntime" and plan.precision != "fp32":
                samples[plan.precision.upper()] = ev.predictions
                if plan.precision == "int8":
                    order = per_image
        if s_index == 0:
            samples = {"FP32": ref.predictions, **samples}
            if not order:  # no INT8: show where FP32 is least accurate instead
                order = [float(np.mean(resize_labels(p, g.shape) == g))
                         for p, g in zip(ref.predictions, labels, strict=True)]
    return Scored(rows, images, labels, samples, order)


def build_report(cfg: ReportConfig, echo: Callable[[str], None] | None = None) -> ReportResult:
    say = echo or to_stderr
    started = time.perf_counter()
    inp = check_inputs(cfg)
    output = Path(cfg.output)
    models = output / "models"
    models.mkdir(parents=True, exist_ok=True)
    say(f"report: {inp.source} on {cfg.dataset}:{cfg.split} ({inp.count} images), sizes "
        f"{', '.join(format_hw(s) for s in inp.sizes)}, backends {', '.join(inp.backends)}, "
        f"precisions {', '.join(inp.precisions)}")

    say("[1/3] models")
    fp32, built = build_models(cfg, inp, models, say)
    plans = plan_rows(cfg, inp, built, models, say)
    say(f"[2/3] evaluating {sum(1 for p in plans if p.model)} backend/precision pairs x {len(inp.sizes)} size(s)")
    scored = score_rows(cfg, inp, plans, fp32, say)

    say("[3/3] writing the report")
    card = inp.card
    files = write_outputs(output, scored, card, cfg)
    meta = {
        "model": str(inp.source),
        "fp32_onnx": str(fp32),
        "card": {"variant": card.variant, "width": card.width, "num_classes": card.num_classes},
        "dataset": cfg.dataset,
        "dataset_options": inp.dataset_options,
        "data_root": cfg.data_root,
        "split": cfg.split,
        "num_images": inp.count,
        "sizes": [format_hw(s) for s in inp.sizes],
        "backends": list(inp.backends),
        "precisions": list(inp.precisions),
        "reference": f"ONNX Runtime FP32 ({fp32.name})",
        "class_names": list(card.class_names),
        "latency_method": "fcn_deploy.profile on the first image, "
        + (f"{cfg.latency_iterations} iterations" if cfg.latency_iterations else f"{cfg.latency_duration_s:g} s")
        + f" after {cfg.latency_warmup_s:g} s warm-up",
        "environment": environment(),
        "seconds": round(time.perf_counter() - started, 2),
        "files": [str(p.relative_to(output)) for p in files.values()],
    }
    files.update(write_report(output, scored.rows, meta))
    return ReportResult(output, sort_rows(scored.rows), files, meta)


def backend_check_profile(backend: Backend, size: tuple[int, int]) -> None:
    """A TensorRT engine must cover the size: a clear error instead of a TensorRT failure."""
    profile = getattr(backend, "profile", None)
    if profile is not None and hasattr(profile, "check_input"):
        profile.check_input((1, 3, size[0], size[1]))


def _row_bytes(plan: RowPlan) -> int:
    if plan.backend == "torch":
        from fcn_deploy.training.checkpoint import load_checkpoint

        state = load_checkpoint(plan.model)["state_dict"]  # weights only: the .pt also holds optimiser state
        return int(sum(t.numel() * t.element_size() for t in state.values()))
    return model_bytes(plan.model)


def write_outputs(output: Path, scored: Scored, card: ModelCard, cfg: ReportConfig) -> dict[str, Path]:
    from fcn_deploy.report.plots import plot_pareto, plot_per_class
    from fcn_deploy.report.samples import pick_images, write_sample

    files = {
        "pareto": plot_pareto(scored.rows, output / "pareto.png", f"{card.variant} on {cfg.dataset}:{cfg.split}"),
        "per_class": plot_per_class(scored.rows, card.class_names, output / "per_class.png",
                                    f"per-class IoU, {cfg.dataset}:{cfg.split}"),
    }
    for n, (i, why) in enumerate(pick_images(scored.sample_order, cfg.num_samples)):
        name = f"{n:02d}_image{i}_{why.replace(' ', '_')}.png"
        files[f"sample{n}"] = write_sample(
            output / "samples" / name, scored.images[i], scored.labels[i],
            [(k, v[i]) for k, v in scored.sample_predictions.items()], card.palette,
        )
    return files
