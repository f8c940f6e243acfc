"""What `build-engine` asks for, as chain steps: the precision decision (the graph's own, or FP16/INT8 lowering
of an FP32 graph first) and the profile, every input checked before TensorRT or a GPU is looked for."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fcn_deploy.chain.artifact import Progress, to_stderr
from fcn_deploy.chain.engine import EngineBuilder, EngineFromOnnx
from fcn_deploy.chain.lowered import LoweredOnnx
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.onnx_io import load_onnx
from fcn_deploy.engine.build import BuildOptions, check_level, detect_precision
from fcn_deploy.engine.profile_shapes import (
    check_against_onnx,
    onnx_input_dims,
    parse_workspace,
    profile_from_card,
)

LOWERING_PRECISIONS = ("fp16", "int8")


def default_engine_path(model: Path) -> Path:
    return Path(model).with_suffix(".engine")


def engine_for_onnx(
    model: Path, output: Path | None = None, *, precision: str | None = None, min_shape: str | None = None,
    opt_shape: str | None = None, max_shape: str | None = None, batch: str | None = None,
    workspace: str | None = None, timing_cache: Path | None = None, dla_core: int | None = None,
    builder_optimization_level: int | None = None, version_compatible: bool = False,
    keep_onnx: Path | None = None, calibration: Mapping[str, Any] | None = None,
    builder: EngineBuilder | None = None, reuse: bool = True, say: Progress = to_stderr,
) -> EngineFromOnnx:  # fmt: skip
    """The engine step for `model` (lowered to `precision` first when the graph is FP32)."""
    model = Path(model)
    output = Path(output) if output is not None else default_engine_path(model)
    if precision is not None and precision not in LOWERING_PRECISIONS:
        raise FcnDeployError(f"precision {precision!r}: choose one of {', '.join(LOWERING_PRECISIONS)}")
    workspace_bytes = parse_workspace(workspace) if workspace else None
    check_level(builder_optimization_level)
    onnx_model = load_onnx(model)
    card = ModelCard.from_onnx(onnx_model, str(model))
    profile = profile_from_card(card, min_shape, opt_shape, max_shape, batch)
    check_against_onnx(profile, onnx_input_dims(onnx_model, card.input_name), str(model))
    current = card.precision if card.precision != "fp32" else detect_precision(onnx_model)
    wanted = precision or current
    if current != "fp32" and wanted != current:
        raise FcnDeployError(f"{model} is already {current.upper()}; build it without --{wanted}, or pass the FP32 ONNX")
    options = BuildOptions(profile, workspace_bytes, timing_cache, dla_core, builder_optimization_level,
                           version_compatible)  # fmt: skip
    parent: Path | LoweredOnnx = model
    if wanted != current:
        parent = LoweredOnnx(model, wanted, keep_onnx, target="tensorrt", calibration=calibration, reuse=reuse,
                             say=say)  # fmt: skip
    return EngineFromOnnx(parent, output, options, builder=builder, reuse=reuse, say=say)
