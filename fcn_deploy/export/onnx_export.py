"""torch FCN -> ONNX: output head, named dynamic axes, optional Resize upsampling, onnxslim, model card, checks.

Exporter: the TorchScript-based `torch.onnx.export(..., dynamo=False)`. On this FCN it yields the textbook crop
(Shape -> Gather -> Unsqueeze -> Slice, no size baked in), names the output dims with the input's symbols, and
exports in about a second; the dynamo exporter (torch 2.13's default) also keeps the crops dynamic but needs opset
>= 18, takes ~15x longer and names output dims by sympy expressions such as "Min(height + 31, ...) - 31".
Opset 17 is pinned: TensorRT 10.3 (JetPack 6.x, the oldest runtime we target) parses opsets 9-20, and 17 needs
nothing newer than what that parser, TensorRT 8.6 and every ONNX Runtime >= 1.14 implement.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fcn_deploy import __version__
from fcn_deploy.core.atomic import atomic_write, sha256_file
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.model_config import ModelConfig
from fcn_deploy.core.onnx_io import stamp_weights
from fcn_deploy.core.shapes import DEFAULT_SHAPES, ShapeRange, format_hw
from fcn_deploy.export import validate
from fcn_deploy.export.fixed_upsample import resolve_upsample, with_fixed_upsampling
from fcn_deploy.export.heads import ExportHead, output_axes, output_specs
from fcn_deploy.export.options import DYNAMIC_DIMS, ExportOptions
from fcn_deploy.training.fcn import FCN, build_model

log = logging.getLogger(__name__)

ODD_CHECK_SIZE = (333, 517)


@dataclass(frozen=True)
class ExportReport:
    output: Path
    sha256: str
    size_bytes: int
    card: ModelCard
    op_counts: dict[str, int]
    parity: tuple[validate.ParityResult, ...]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "opset": self.card.provenance.get("opset"),
            "outputs": [dataclasses.asdict(o) for o in self.card.outputs],
            "op_counts": self.op_counts,
            "parity": [dataclasses.asdict(r) for r in self.parity],
            "seconds": self.seconds,
        }


def card_shapes(card: ModelCard, options: ExportOptions) -> ShapeRange:
    """The recommended input shapes for the card (and TensorRT's optimization profile): the default range around
    the trace size (--input-size, else the training resolution, else the default opt), each end overridable."""
    if options.static_shape:
        return ShapeRange(options.static_shape, options.static_shape, options.static_shape)
    around = DEFAULT_SHAPES.around(options.opt_shape or card.training_resolution or DEFAULT_SHAPES.opt_hw)
    opt = around.opt_hw
    lo, hi = options.min_shape or around.min_hw, options.max_shape or around.max_hw
    # An axis left out of --dynamic is fixed at the trace (opt) size.
    fixed = [axis not in options.dynamic for axis in ("height", "width")]
    lo = tuple(o if f else v for o, v, f in zip(opt, lo, fixed, strict=True))
    hi = tuple(o if f else v for o, v, f in zip(opt, hi, fixed, strict=True))
    try:
        return ShapeRange(lo, opt, hi)  # type: ignore[arg-type]
    except FcnDeployError as e:
        raise FcnDeployError(f"{e}; adjust --min-shape/--input-size/--max-shape") from None


def default_check_sizes(shapes: ShapeRange) -> tuple[tuple[int, int], ...]:
    """opt, half of opt and an odd size: 333x517 for full-size models, else one just off opt (e.g. 63x97)."""
    lo, opt, hi = shapes.min_hw, shapes.opt_hw, shapes.max_hw
    if lo == hi:
        return (opt,)
    half = (max(lo[0], (opt[0] + 1) // 2), max(lo[1], (opt[1] + 1) // 2))
    odd = ODD_CHECK_SIZE if min(opt) >= 256 else ((opt[0] - 1) | 1, (opt[1] + 1) | 1)
    odd = (min(max(lo[0], odd[0]), hi[0]), min(max(lo[1], odd[1]), hi[1]))
    return tuple(dict.fromkeys((opt, half, odd)))


def _check_writable(output: Path) -> None:
    """Fail before the (slow) export, not after it: create and remove a probe file where the output will go."""
    if output.is_dir():
        raise FcnDeployError(f"{output}: is a directory; give a file path such as {output / 'model.onnx'}")
    parent = output.parent if str(output.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise FcnDeployError(f"{output}: cannot write there ({e.strerror}); choose a writable --output") from None


@contextlib.contextmanager
def _quiet_legacy_exporter():
    """The TorchScript exporter is chosen on purpose (module docstring); hide its deprecation notice and the
    note that shape-dependent Slices are not constant-folded, which is exactly what the crops need."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*Constant folding - Only steps=1.*")
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        yield


def to_onnx_model(model: FCN, options: ExportOptions, trace_hw: tuple[int, int]) -> Any:
    """The raw (unchecked, card-less) ONNX ModelProto of `model` with the head and upsampling of `options`."""
    import onnx

    net = model if options.upsample == "deconv" else with_fixed_upsampling(model, options.upsample)
    wrapper = ExportHead(net, options.head).eval()
    specs = output_specs(options.head)
    dims = {} if options.static_shape else {DYNAMIC_DIMS[d]: d for d in options.dynamic}
    dynamic_axes = {"image": dims, **{s.name: output_axes(s, dims) for s in specs}} if dims else None
    example = torch.zeros(1, 3, *trace_hw)
    buf = io.BytesIO()
    with torch.no_grad(), _quiet_legacy_exporter():
        torch.onnx.export(
            wrapper,
            (example,),
            buf,
            dynamo=False,
            opset_version=options.opset,
            input_names=["image"],
            output_names=[s.name for s in specs],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buf.getvalue())


def simplify(onnx_model: Any) -> Any:
    """onnxslim: constant folding, Identity removal, dead-node elimination (symbolic dims are kept)."""
    import onnxslim

    return onnxslim.slim(onnx_model)


def export_onnx(model: FCN, card: ModelCard, output: str | Path, options: ExportOptions | None = None) -> ExportReport:
    """Export, attach the card, write to a temp file beside `output`, check those bytes, then move it into place.

    The model is put in eval mode and its at-once skip scales are folded in place (neither changes its outputs).
    Raises FcnDeployError (ExportValidationError for failed checks) with nothing written at `output`.
    """
    import onnx

    options = options or ExportOptions()
    options = dataclasses.replace(options, upsample=resolve_upsample(model, options.upsample))
    output = Path(output)
    _check_writable(output)
    if card.variant != model.config.variant or card.num_classes != model.config.num_classes:
        raise FcnDeployError(
            f"model card ({card.variant}, {card.num_classes} classes) does not describe the model "
            f"({model.config.variant}, {model.config.num_classes} classes)"
        )
    model.eval()
    model.fold_skip_scales()
    shapes = card_shapes(card, options)
    sizes = list(options.check_sizes or default_check_sizes(shapes))
    for size in sizes:  # a fixed axis only runs at its own size
        if any(lo == hi != v for v, lo, hi in zip(size, shapes.min_hw, shapes.max_hw, strict=True)):
            raise FcnDeployError(
                f"--check-sizes {format_hw(size)}: this graph fixes the input at "
                f"{format_hw(shapes.min_hw)} on its non-dynamic axes; check at that size"
            )
    # Batch 2 at the cheapest size proves the batch axis is really dynamic.
    batch_dynamic = not options.static_shape and "batch" in options.dynamic
    smallest = min(range(len(sizes)), key=lambda i: sizes[i][0] * sizes[i][1])
    batches = [2 if (batch_dynamic and i == smallest) else 1 for i in range(len(sizes))]
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    onnx_model = to_onnx_model(model, options, shapes.opt_hw)
    seconds["export"] = time.perf_counter() - t
    if options.simplify:
        t = time.perf_counter()
        onnx_model = simplify(onnx_model)
        seconds["simplify"] = time.perf_counter() - t

    specs = output_specs(options.head)
    card = card.with_shapes(shapes).replace(
        **dataclasses.asdict(model.config),  # the card describes the graph: its architecture is the model's
        outputs=specs,
        upsample=options.upsample,
        precision="fp32",
        exporter_version=__version__,
        provenance={
            **card.provenance,
            "exporter": f"torch.onnx TorchScript exporter, torch {torch.__version__.split('+')[0]}",
            "opset": options.opset,
            "simplified": options.simplify,
            "head": options.head,
            "dynamic": [] if options.static_shape else list(options.dynamic),
        },
    )
    card.attach(onnx_model)
    stamp_weights(onnx_model)  # the integrity record, checked by load_onnx
    onnx_model.producer_name, onnx_model.producer_version = "fcn-deploy", __version__
    onnx_model.doc_string = f"{card.variant} FCN ({card.num_classes} classes), exported by fcn-deploy {__version__}"
    data = onnx_model.SerializeToString()
    del onnx_model

    @torch.no_grad()
    def reference(x):
        return model(torch.from_numpy(x)).numpy()

    t = time.perf_counter()
    with atomic_write(output, "wb") as f:  # a failed check below deletes the temp file: nothing at `output`
        f.write(data)
        written = onnx.load_from_string(data)
        validate.check_structure(written, str(output))
        op_counts = validate.check_operators(written)
        dims = {} if options.static_shape else {DYNAMIC_DIMS[d]: d for d in options.dynamic}
        validate.check_dynamic_axes(written, {"image": dims, **{s.name: output_axes(s, dims) for s in specs}})
        del written
        results = validate.parity(data, reference, sizes, batches)
        for r in results:
            log.debug("parity %s", r.line())
        validate.raise_on_failed(results)
    seconds["validate"] = time.perf_counter() - t
    return ExportReport(output, sha256_file(output), output.stat().st_size, card, dict(op_counts), tuple(results), seconds)


def _config_conflicts(config: ModelConfig, requested: dict[str, Any]) -> list[str]:
    return [
        f"--{k.replace('_', '-')} {v} (checkpoint: {getattr(config, k)})"
        for k, v in requested.items()
        if v != getattr(config, k)
    ]


def model_for_export(
    checkpoint: str | Path | None,
    variant: str | None = None,
    num_classes: int | None = None,
    width: float | None = None,
    padding: str | None = None,
) -> tuple[FCN, ModelCard, bool]:
    """(model, card, trained). With a checkpoint its config and card win and any differing flag is an error;
    without one, an untrained model: trunk as initialised, score layers N(0, 0.01) from seed 0 (instead of the
    paper's zeros) so that outputs, validation and calibration ranges downstream are not all zero."""
    requested = {"variant": variant, "num_classes": num_classes, "width": width, "padding": padding}
    requested = {k: v for k, v in requested.items() if v is not None}
    if checkpoint is not None:
        from fcn_deploy.training.checkpoint import model_from_checkpoint

        model, card, _ = model_from_checkpoint(checkpoint)
        conflicts = _config_conflicts(model.config, requested)
        if conflicts:
            raise FcnDeployError(
                f"{checkpoint}: {'; '.join(conflicts)}; the checkpoint defines the model: drop the flag(s) "
                "or pass the matching checkpoint"
            )
        return model, card, True
    config = ModelConfig(**requested)  # what is not given takes ModelConfig's defaults
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for name in ("score_fr", "score_pool4", "score_pool3"):
            if hasattr(model, name):
                torch.nn.init.normal_(getattr(model, name).weight, std=0.01)
    card = ModelCard.from_config(config, provenance={"untrained": True})
    return model, card, False
