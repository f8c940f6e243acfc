"""Checks every export passes before it is moved into place; torch-free, so existing files can be checked too.

1. `onnx.checker.check_model(full_check=True)` and strict shape inference.
2. Operators: only the allow-list below (all in TensorRT 10.3's ONNX parser, the oldest runtime we target:
   JetPack 6.x), default domain only, Resize only in modes TensorRT implements.
3. Dynamic axes: the input and outputs carry the named symbolic dimensions that were asked for.
4. Parity: ONNX Runtime against a reference (PyTorch, passed in as a callable) at several sizes, including an
   odd one: max |logit diff| <= SCORE_RTOL * max(1, max |logit|), max |prob diff| <= PROB_ATOL, label agreement
   >= MIN_AGREEMENT, and every output exactly H x W of its input.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.shapes import format_hw

# Every op type our exports may contain; onnx-tensorrt's docs/operators.md lists each as supported since TensorRT
# 8.4, so TensorRT 10.3 and later parse them all (Range with computed bounds: integer only, which is all the
# matmul upsampling uses).
ALLOWED_OPS = frozenset(
    {
        "Abs", "Add", "ArgMax", "BatchNormalization", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv",
        "ConvTranspose", "Div", "Expand", "Gather", "Identity", "MatMul", "MaxPool", "Mul", "Pad", "Range", "Relu",
        "Reshape", "Resize", "Shape", "Slice", "Softmax", "Squeeze", "Sub", "TopK", "Transpose", "Unsqueeze",
    }
)  # fmt: skip
# onnx-tensorrt's restrictions: these inputs must be initializers (or Constant outputs) for the parser.
CONSTANT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Slice": (3,), "Squeeze": (1,), "Unsqueeze": (1,), "TopK": (1,)}
RESIZE_MODES = {"linear", "nearest"}
RESIZE_COORDS = {"half_pixel", "align_corners", "asymmetric"}

SCORE_RTOL = 1e-4  # of max(1, max |reference logit|): float32 accumulation-order noise is ~1e-6 of it
PROB_ATOL = 1e-4
MIN_AGREEMENT = 0.9999


class ExportValidationError(FcnDeployError):
    """The exported graph failed a check; nothing is written at the output path."""


@dataclass(frozen=True)
class ParityResult:
    size: tuple[int, int]
    batch: int
    max_abs_diff: float  # logits, ORT vs reference
    logit_scale: float  # max |reference logit|
    label_agreement: float  # fraction of pixels where ORT's label is the reference's top class (ties within tolerance)
    prob_max_abs_diff: float | None  # when the graph has a probs output
    passed: bool

    def line(self) -> str:
        probs = "" if self.prob_max_abs_diff is None else f"  probs diff {self.prob_max_abs_diff:.2e}"
        return (
            f"{format_hw(self.size)} (batch {self.batch}): max |logit diff| {self.max_abs_diff:.2e} "
            f"(max |logit| {self.logit_scale:.3g}){probs}  label agreement {100 * self.label_agreement:.4f}%"
            f"  {'ok' if self.passed else 'FAILED'}"
        )


def check_operators(model: Any) -> collections.Counter:
    """Raise unless every node is an allow-listed default-domain op, with the inputs TensorRT needs constant
    constant and Resize in a mode it implements. Returns the op counts."""
    counts: collections.Counter = collections.Counter()
    constants = {i.name for i in model.graph.initializer}
    bad = []
    for node in model.graph.node:  # topologically sorted (the checker ensures it)
        counts[node.op_type] += 1
        # The TorchScript exporter shares equal weights through Identity nodes; the parser folds those.
        if node.op_type == "Constant" or (node.op_type == "Identity" and node.input[0] in constants):
            constants.update(node.output)
        if node.domain not in ("", "ai.onnx") or node.op_type not in ALLOWED_OPS:
            bad.append(f"{node.domain + '::' if node.domain else ''}{node.op_type} ({node.name})")
        elif any(i < len(node.input) and node.input[i] not in constants for i in CONSTANT_INPUTS.get(node.op_type, ())):
            bad.append(f"{node.op_type} with a computed weight/axes/K input ({node.name})")
        elif node.op_type == "Resize":
            attrs = {a.name: a.s.decode() for a in node.attribute if a.type == a.STRING}
            mode = attrs.get("mode", "nearest")
            coords = attrs.get("coordinate_transformation_mode", "half_pixel")
            if mode not in RESIZE_MODES or coords not in RESIZE_COORDS:
                bad.append(f"Resize mode={mode} coordinate_transformation_mode={coords} ({node.name})")
    if bad:
        raise ExportValidationError(
            f"graph uses operators outside the TensorRT allow-list or its restrictions: {', '.join(bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''}; see ALLOWED_OPS in fcn_deploy/export/validate.py"
        )
    return counts


def _dims(value_info: Any) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def check_structure(model: Any, source: str = "exported graph") -> None:
    """onnx.checker with full_check (includes strict shape inference) and an explicit strict inference pass."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise ExportValidationError(f"{source}: ONNX check failed ({first})") from None


def check_dynamic_axes(model: Any, expected: dict[str, dict[int, str]]) -> None:
    """Every named tensor has the named symbolic dims at the given axes (expected: {tensor: {axis: name}})."""
    tensors = {v.name: v for v in list(model.graph.input) + list(model.graph.output)}
    for name, axes in expected.items():
        if name not in tensors:
            raise ExportValidationError(f"graph has no input/output named {name!r}")
        dims = _dims(tensors[name])
        for axis, dim_name in axes.items():
            if axis >= len(dims) or dims[axis] != dim_name:
                raise ExportValidationError(f"{name}: axis {axis} is {dims[axis:axis + 1]}, expected '{dim_name}'")


def scores_tensor(model: Any) -> str:
    """Name of the logits tensor: the 'logits' output, else the input of the ArgMax/Softmax behind the outputs."""
    outputs = [o.name for o in model.graph.output]
    if "logits" in outputs:
        return "logits"
    producer = {out: node for node in model.graph.node for out in node.output}
    node = producer[outputs[0]]
    while node.op_type in ("Cast", "Identity"):
        node = producer[node.input[0]]
    if node.op_type not in ("ArgMax", "Softmax"):
        raise ExportValidationError(f"cannot find the logits behind output {outputs[0]!r} (ends in {node.op_type})")
    return node.input[0]


def parity(
    model_or_path: bytes | str | Path,
    reference: Callable[[np.ndarray], np.ndarray],
    sizes: Iterable[tuple[int, int]],
    batches: Sequence[int] | None = None,
    seed: int = 0,
) -> list[ParityResult]:
    """Run the ONNX model (serialized bytes or a file; its logits exposed as an extra output) and `reference`
    (NCHW float32 -> logits) on seeded standard-normal images of each size."""
    import onnx
    import onnxruntime as ort

    if isinstance(model_or_path, bytes):
        model = onnx.load_from_string(model_or_path)
    else:
        model = onnx.load(str(model_or_path))
    logits_name = scores_tensor(model)
    kinds = [o.name for o in model.graph.output]
    if logits_name not in kinds:
        model.graph.output.append(onnx.helper.make_tensor_value_info(logits_name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    del model
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(seed)
    sizes = list(sizes)
    results = []
    for i, (h, w) in enumerate(sizes):
        n = batches[i] if batches else 1
        x = rng.standard_normal((n, 3, h, w), dtype=np.float32)
        got = dict(zip(names, session.run(None, {input_name: x}), strict=True))
        ref = np.asarray(reference(x), dtype=np.float32)
        logits = got[logits_name]
        _check_shape(logits_name, logits.shape, ref.shape)
        diff = float(np.abs(logits - ref).max())
        scale = float(np.abs(ref).max())
        labels = got["labels"] if "labels" in got else logits.argmax(axis=1)
        _check_shape("labels", labels.shape, (ref.shape[0], *ref.shape[2:]))
        agreement = label_agreement(ref, labels, SCORE_RTOL * max(1.0, scale))
        prob_diff = None
        if "probs" in got:
            _check_shape("probs", got["probs"].shape, ref.shape)
            e = np.exp(ref - ref.max(axis=1, keepdims=True))
            prob_diff = float(np.abs(got["probs"] - e / e.sum(axis=1, keepdims=True)).max())
        passed = (
            diff <= SCORE_RTOL * max(1.0, scale)
            and agreement >= MIN_AGREEMENT
            and (prob_diff is None or prob_diff <= PROB_ATOL)
        )
        results.append(ParityResult((h, w), n, diff, scale, agreement, prob_diff, passed))
    return results


def label_agreement(ref_scores: np.ndarray, labels: np.ndarray, atol: float) -> float:
    """Fraction of pixels whose label is the reference's top class, where a class whose reference score is within
    `atol` of the top score counts as top too: ArgMax ties (two scores equal within the logit tolerance) are broken
    differently by ONNX Runtime and PyTorch and are not disagreements."""
    if labels.dtype.kind not in "iu":
        labels = labels.argmax(axis=1)
    picked = np.take_along_axis(ref_scores, labels[:, None].astype(np.int64), axis=1)[:, 0]
    return float((picked >= ref_scores.max(axis=1) - atol).mean())


def _check_shape(name: str, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    if tuple(got) != tuple(want):
        raise ExportValidationError(f"output {name} has shape {tuple(got)}, PyTorch gives {tuple(want)}")


def raise_on_failed(results: Sequence[ParityResult]) -> None:
    failed = [r for r in results if not r.passed]
    if failed:
        r = failed[0]
        raise ExportValidationError(
            f"ONNX Runtime disagrees with PyTorch at {r.line()}; limits: logit diff <= {SCORE_RTOL:g} x "
            f"max(1, max |logit|), probs diff <= {PROB_ATOL:g}, agreement >= {100 * MIN_AGREEMENT:.2f}%"
        )


def check_onnx_file(path: str | Path) -> collections.Counter:
    """Checks for an existing file (no torch): load + full check + shape inference + operator allow-list."""
    from fcn_deploy.core.onnx_io import load_onnx

    model = load_onnx(path, full_check=True)
    check_structure(model, str(path))
    return check_operators(model)
