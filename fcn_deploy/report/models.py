"""The models a report scores, made through fcn_deploy.chain in OUTPUT/models/: `model.onnx` (FP32, exported
from the checkpoint when one is given), `model.int8.onnx` (ONNX Runtime's Q/DQ), `model.fp16.onnx`, and where
TensorRT can build, `model.int8-trt.onnx` (TensorRT's Q/DQ) and one `model.PRECISION.engine` per precision whose
profile covers every requested size. Each step reuses what is there when its parent and options match."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fcn_deploy.chain.artifact import Parent, Progress, resolve
from fcn_deploy.chain.engine import EngineBuilder, EngineFromOnnx
from fcn_deploy.chain.lowered import LoweredOnnx
from fcn_deploy.chain.onnx import OnnxFromCheckpoint
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.engine.build import BuildOptions
from fcn_deploy.engine.profile_shapes import Profile, validate
from fcn_deploy.export.options import ExportOptions
from fcn_deploy.report.inputs import Inputs, ReportConfig

ONNX_TARGETS = ("onnxruntime", "tensorrt")  # the backends that run a lowered ONNX (TensorRT through an engine)
# OpenVINO runs the Q/DQ flavour it is fastest on at equal accuracy (benchmarks/cpu_runtimes.py: the ONNX Runtime
# flavour, 0.17x ORT FP32 vs the TensorRT flavour's 0.34x on the CamVid model on AMX, alike on AVX2, mean IoU within
# 0.05 points on AMX and 0.16 better on AVX2), and FP16 as the one FP16 graph; BF16 it computes from the FP32 graph.
OPENVINO_INT8_TARGET = "onnxruntime"


def lowering_target(backend: str, precision: str) -> str:
    """Which lowered graph (keyed by quantize --target) a backend's row runs."""
    if backend == "openvino":
        return OPENVINO_INT8_TARGET if precision == "int8" else "onnxruntime"
    return backend


@dataclass
class RowPlan:
    backend: str
    precision: str
    model: Path | None = None
    reason: str = ""


def span(sizes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], tuple[int, int]]:
    return (min(s[0] for s in sizes), min(s[1] for s in sizes)), (max(s[0] for s in sizes), max(s[1] for s in sizes))


def export_options(card: ModelCard, sizes: Sequence[tuple[int, int]]) -> ExportOptions:
    """A profile that covers the card's range and every requested size, tuned for the training resolution."""
    lo, hi = span([*sizes, card.min_shape, card.max_shape])
    return ExportOptions(opt_shape=tuple(card.training_resolution or sizes[0]), min_shape=lo, max_shape=hi)


def fp32_step(cfg: ReportConfig, inp: Inputs, models: Path, say: Progress) -> Parent:
    if cfg.checkpoint is None:
        return inp.source
    return OnnxFromCheckpoint(inp.source, models / "model.onnx", export_options(inp.card, inp.sizes), say=say)


def lowered_steps(cfg: ReportConfig, inp: Inputs, fp32: Parent, models: Path, say: Progress) -> dict:
    """(target, precision) -> the LoweredOnnx step; FP16 is one graph for both targets."""
    calib_split = "train" if cfg.split != "train" else "val"  # never calibrate on the images being scored
    calibration = {
        "calib_dataset": f"{cfg.dataset}:{calib_split}", "data_root": Path(cfg.data_root) if cfg.data_root else None,
        "num_images": cfg.calib_images, "method": cfg.calib_method, "calib_shapes": tuple(map(tuple, inp.sizes)),
        "eval_images": 4,
        # No latency in the lowering's summary: the report times every row itself, interleaved (report.latency),
        # where a lowering's own ratio would be one more figure from another moment of a shared machine.
        "latency_runs": 0,
    }  # fmt: skip
    runs = [b for b in inp.backends if b in (*ONNX_TARGETS, "openvino") and not (b == "tensorrt" and inp.trt_reason)]
    steps: dict[tuple[str, str], LoweredOnnx] = {}
    for precision in (p for p in inp.precisions if p not in ("fp32", "bf16")):
        for target in dict.fromkeys(lowering_target(b, precision) for b in runs):
            if precision == "fp16" and steps.get(("onnxruntime", "fp16")):
                steps[(target, precision)] = steps[("onnxruntime", "fp16")]
                continue
            suffix = f"{precision}-trt" if (precision == "int8" and target == "tensorrt") else precision
            auto = precision == "int8" and cfg.auto  # the --auto plan: its files (and rows' model) say so
            output = models / f"model.{suffix}{'-auto' if auto else ''}.onnx"
            steps[(target, precision)] = LoweredOnnx(
                fp32, precision, output, target=target, say=say,
                calibration={**calibration, "cache": output.with_name(output.name + ".calib.json"),
                             **({"auto": True, "max_drop": cfg.max_drop, "metric": cfg.metric} if auto else {})},
            )  # fmt: skip
    return steps


def engine_step(onnx: Parent, card: ModelCard, precision: str, sizes: Sequence[tuple[int, int]], models: Path,
                builder: EngineBuilder, say: Progress) -> EngineFromOnnx:  # fmt: skip
    lo, hi = span(sizes)
    profile = validate(Profile(card.input_name, (1, 1, 1), lo, tuple(sizes[0]), hi))
    return EngineFromOnnx(onnx, models / f"model.{precision}.engine", BuildOptions(profile=profile),
                          builder=builder, say=say)  # fmt: skip


def build_models(cfg: ReportConfig, inp: Inputs, models: Path, builder: EngineBuilder,
                 say: Progress) -> tuple[Path, list[RowPlan]]:  # fmt: skip
    """The FP32 ONNX, and one plan per backend x precision: the model file to run, or why the row is skipped."""
    fp32_parent = fp32_step(cfg, inp, models, say)
    fp32 = resolve(fp32_parent)
    lowered = lowered_steps(cfg, inp, fp32_parent, models, say)
    built: dict[tuple[str, str], Path | str] = {}
    for key, step in lowered.items():
        try:
            built[key] = step().path
        except FcnDeployError as e:
            built[key] = f"lowering failed: {e}"
            say(f"  {key[1]} ({key[0]}) failed: {e}")
    plans: list[RowPlan] = []
    for backend in inp.backends:
        for precision in inp.precisions:
            plans.append(plan_row(cfg, inp, backend, precision, fp32 if precision in ("fp32", "bf16") else built.get(
                (lowering_target(backend, precision), precision)), models, builder, say))  # fmt: skip
    return fp32, plans


def plan_row(cfg: ReportConfig, inp: Inputs, backend: str, precision: str, model: Path | str | None, models: Path,
             builder: EngineBuilder, say: Progress) -> RowPlan:  # fmt: skip
    if backend == "torch":
        if precision != "fp32":
            return RowPlan(backend, precision, reason="PyTorch eager is the FP32 reference only")
        if cfg.checkpoint is None:
            return RowPlan(backend, precision, reason="needs --checkpoint (PyTorch eager row)")
        return RowPlan(backend, precision, inp.source)
    if precision == "bf16":
        if backend != "openvino":
            return RowPlan(backend, precision, reason=f"{backend} does not compute in BF16 (OpenVINO does)")
        from fcn_deploy.runtime.openvino_backend import bf16_refusal

        if (why := bf16_refusal()) is not None:
            return RowPlan(backend, precision, reason=why)
    if backend == "tensorrt" and inp.trt_reason is not None:
        return RowPlan(backend, precision, reason=inp.trt_reason)
    if isinstance(model, str) or model is None:
        return RowPlan(backend, precision, reason=model or "not built")
    if backend != "tensorrt":
        return RowPlan(backend, precision, model)
    try:
        engine = engine_step(model, inp.card, precision, inp.sizes, models, builder, say)()
    except FcnDeployError as e:
        return RowPlan(backend, precision, reason=f"engine build failed: {e}")
    return RowPlan(backend, precision, engine.path)
