"""What a report is asked for (ReportConfig) and every check of it, all made before anything is written."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fcn_deploy.chain.engine import EngineBuilder
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.onnx_io import load_onnx
from fcn_deploy.core.shapes import format_hw

PRECISIONS = ("fp32", "fp16", "int8")  # the default rows
CPU_PRECISIONS = ("bf16",)  # on request: computed by OpenVINO on CPUs with AVX512-BF16/AMX, skipped elsewhere
BACKENDS = ("torch", "onnxruntime", "tensorrt", "openvino")  # auto: all but openvino (name it to add its rows)
DEVICES = ("cpu", "cuda")
DEFAULT_CALIB_IMAGES = 100  # a report lowers several models: fewer images than quantize's default
DEFAULT_LATENCY_S = 2.0


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
    calib_images: int = DEFAULT_CALIB_IMAGES
    calib_method: str | None = None  # quantize's --method (None: best for --auto rows, else entropy)
    auto: bool = False  # INT8 rows use `quantize --auto`'s measured plan (fcn_deploy.calibration.plan)
    max_drop: float = 0.3  # --auto budget (points)
    metric: str | None = None  # --auto metric: miou | agreement
    latency_warmup_s: float = 0.5
    latency_duration_s: float = DEFAULT_LATENCY_S
    latency_iterations: int | None = None
    latency_rounds: int = 5  # interleaved rounds over a size's rows (fcn_deploy.report.latency): load hits all alike
    num_samples: int = 3
    device: str = "cpu"


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
    """'auto': torch (with a checkpoint), onnxruntime, tensorrt (a skipped row if absent); openvino on request."""
    if "auto" in requested:
        if len(requested) > 1:
            raise FcnDeployError("--backends auto cannot be combined with named backends; give one or the other")
        return (("torch",) if has_checkpoint else ()) + ("onnxruntime", "tensorrt")
    return tuple(requested)


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
        if not card.shapes.contains(hw):
            raise FcnDeployError(
                f"--sizes {format_hw(hw)}: outside the profile of {source} (min {format_hw(lo)}, max "
                f"{format_hw(hi)}); choose sizes in that range or re-export with --min-shape/--max-shape"
            )


def card_of_checkpoint(path: Path) -> ModelCard:
    from fcn_deploy.training.checkpoint import load_checkpoint

    return ModelCard.from_dict(load_checkpoint(path)["model_card"], str(path))


def card_of_onnx(path: Path) -> ModelCard:
    return ModelCard.from_onnx(load_onnx(path), str(path))


def load_dataset(cfg: ReportConfig, card: ModelCard) -> tuple[Any, dict[str, Any]]:
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


def check_inputs(cfg: ReportConfig, builder: EngineBuilder) -> Inputs:
    """`builder`: the chain's engine builder, which says whether TensorRT rows can be built here."""
    if (cfg.checkpoint is None) == (cfg.onnx is None):
        raise FcnDeployError("give exactly one model: --checkpoint CKPT or --onnx MODEL")
    precisions = parse_choices(cfg.precisions, PRECISIONS + CPU_PRECISIONS, "--precisions")
    backends = resolve_backends(parse_choices(cfg.backends, ("auto", *BACKENDS), "--backends"),
                                cfg.checkpoint is not None)
    if cfg.max_images is not None and cfg.max_images < 1:
        raise FcnDeployError(f"--max-images {cfg.max_images}: must be at least 1")
    if cfg.latency_rounds < 1:
        raise FcnDeployError(f"latency rounds {cfg.latency_rounds}: must be at least 1")
    if cfg.device not in DEVICES:
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
    missing = builder.unavailable() if "tensorrt" in backends else None
    return Inputs(source, card, precisions, backends, sizes, ds, ds_options, count, missing and missing.reason)
