"""INT8 by explicit Q/DQ in the ONNX graph, from calibrated per-tensor ranges.

Built on ONNX Runtime's `QDQQuantizer` (the engine under `quantize_static`) rather than NVIDIA ModelOpt: it is
already installed with onnxruntime, it accepts precomputed ranges (so a calibration cache skips calibration
entirely), and its placement options express both flavours below. ModelOpt's Q/DQ graph ran 1.2x slower than FP32
on ORT CPU here, and it silently falls back to random scales without data.

- `tensorrt`: symmetric int8 everywhere (zero point 0), per-channel weight scales on axis 0 for Conv and for
  ConvTranspose too (its input channel: TensorRT's deconvolution kernels take no per-output-channel scales,
  NVIDIA/TensorRT#2380; ModelOpt and pytorch-quantization use axis 0; ORT's own default is axis 1), per-tensor
  activations; on a skip Add only the input that no Conv produced keeps its Q/DQ (NVIDIA's placement guide:
  the Conv branch fuses into the Conv + Add kernel); Q/DQ only on the inputs of Conv, ConvTranspose and Add (where TensorRT
  fuses them), never on their outputs or the network output; no int32 bias Q/DQ (TensorRT's parser rejects it).
- `onnxruntime`: what ORT CPU turns into QLinearConv-style int8 kernels (U8S8): asymmetric uint8 activations,
  symmetric int8 per-channel weights, int32 biases, Q/DQ around every op ORT quantizes. Weights use 7 bits
  (ORT's reduce_range) on x86 CPUs without VNNI: ORT's AVX2 U8S8 kernels multiply-add pairs into saturating int16
  (VPMADDUBSW); with full 8-bit weights a CamVid FCN-8s agreed with FP32 on only 87% of pixels (-7.8 mIoU), with
  7-bit weights on 99% (+0.2 mIoU) at the same speed. With AVX512-VNNI, AVX-VNNI or AMX-INT8 the kernels
  accumulate u8 x s8 straight into int32 (VPDPBUSD), nothing saturates, and 8-bit weights keep one more bit:
  `choose_weight_bits` picks by the quantizing CPU's flags (the deployment CPU may differ: --weight-bits).
  Measured on a 2-core Xeon with avx512_vnni/avx_vnni (width-1/8 synthetic FCN-8s, all 32 val images): 8-bit
  weights 99.85% pixel agreement / -0.05 mIoU, 7-bit 99.77% / -0.10, at the same speed (0.79x vs 0.78x FP32 at
  360x480, interleaved medians of 21 runs, load ~8); tests/test_weight_bits.py checks the rule against the kernel.
  The fixed bilinear upsampling is rewritten from dense diagonal [C, C, k, k] to grouped form first (identical
  output, C times fewer multiply-adds): ORT's ConvTranspose was a visible share of the INT8 graph's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fcn_deploy.calibration.ranges import TensorRange
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.onnx_io import data_tensors, shape_only_nodes

TARGETS = ("tensorrt", "onnxruntime")
WEIGHT_BITS = (7, 8)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # ORT's U8S8 kernels without int16 saturation
TENSORRT_OP_TYPES = ("Conv", "ConvTranspose", "Add")
QDQ_OP_TYPES = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearAdd", "ConvInteger", "MatMulInteger",
                "DynamicQuantizeLinear", "QLinearMatMul"}


def prepare(model_path: Path, out_path: Path) -> Path:
    """ORT's recommended pre-processing (shape inference, basic graph fusions such as Conv+BatchNorm)."""
    from onnxruntime.quantization import quant_pre_process

    # Symbolic shape inference does not handle the FCN crop arithmetic: ONNX shape inference suffices here.
    quant_pre_process(str(model_path), str(out_path), skip_symbolic_shape=True)
    return out_path


def choose_weight_bits(target: str, asked: int | None = None,
                       flags: dict[str, bool] | None = None) -> tuple[int, str]:  # fmt: skip
    """(weight bits, why) for `target`: TensorRT's are 8; ONNX Runtime's `asked`, else 8 on a CPU whose flags
    (core.environment.cpu_flags; `flags` for tests) name VNNI or AMX-INT8, else 7 (see the module docstring)."""
    if asked is not None and asked not in WEIGHT_BITS:
        raise FcnDeployError(f"--weight-bits {asked}: choose 7 or 8")
    if target == "tensorrt":
        if asked == 7:
            raise FcnDeployError("--weight-bits 7 applies to --target onnxruntime; TensorRT INT8 weights are 8-bit")
        return 8, "TensorRT INT8 weights are 8-bit"
    if asked is not None:
        return asked, f"--weight-bits {asked}"
    if flags is None:
        from fcn_deploy.core.environment import cpu_flags

        flags = cpu_flags()
    if flags is None:
        return 7, "CPU flags unknown (no /proc/cpuinfo flags): 7-bit weights are safe on every ONNX Runtime CPU"
    have = [f for f in VNNI_FLAGS if flags.get(f)]
    if have:
        return 8, f"CPU has {', '.join(have)}: ONNX Runtime's U8S8 kernels do not saturate, 8-bit weights"
    return 7, (f"CPU has none of {', '.join(VNNI_FLAGS)}: ONNX Runtime's AVX2 U8S8 kernels saturate with 8-bit "
               "weights, 7-bit weights")


def op_types_to_quantize(target: str) -> list[str]:
    if target == "tensorrt":
        return list(TENSORRT_OP_TYPES)
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry))


def calibration_op_types() -> list[str]:
    """Ops whose tensors get ranges: the union of both targets, so one calibration cache serves both."""
    return sorted(set(op_types_to_quantize("onnxruntime")) | set(TENSORRT_OP_TYPES))


def resolve_exclude(model: Any, exclude: Sequence[str]) -> list[str]:
    """Node names for `--exclude` entries, each a node name or an op type; an entry matching nothing is an error."""
    names = []
    for entry in exclude:
        hits = [n.name for n in model.graph.node if entry in (n.name, n.op_type)]
        if not hits:
            ops = sorted({n.op_type for n in model.graph.node})
            raise FcnDeployError(f"--exclude {entry!r}: no node has this name or op type; op types here: {ops}")
        names += hits
    return sorted(set(names))


def float_ends(model: Any) -> list[str]:
    """The two ends of the network kept in FP32 by default (`QuantizeConfig.float_ends`): the convs reading the
    raw normalised image, and the output head: from the output back along each node's data input to the last Conv,
    which in an FCN is the whole class-score decoder (score_fr, the upsamplings, the skip Adds, the crops).

    Measured on the CamVid FCN-8s (width 0.25, entropy, 300 images, 101 val images; benchmarks/precision_camvid.py):
    ORT U8S8 went from -2.35 mIoU / 97.8% pixel agreement (all quantized) to -0.70 / 98.8% (first conv float),
    -1.78 / 98.1% (head float: else uint8 Q/DQ sits on the upsampled logits right before ArgMax, and a 0.2 step
    ties close classes) and -0.04 / 99.1% (both); TensorRT from 98.9% to 99.1% agreement.
    The head used to stop at the final ConvTranspose, quantizing the rest of the decoder; on the CamVid model of
    docs/camvid_recipe.md (AMX Xeon, percentile ranges, 32 plan images) the whole decoder in float lost 0.30 points of
    mean IoU instead of 0.80 (ORT flavour; TensorRT 0.33 instead of 1.06), the groups every `--auto` plan had kept
    first, and its ORT-flavour graph ran 0.19x ORT FP32 on OpenVINO instead of 0.27x (OpenVINO's quantized
    ConvTranspose is slower than its FP32 one; ONNX Runtime 0.56x instead of 0.54x): 11-channel maps, ~1% of FP32.
    """
    inputs = {i.name for i in model.graph.input}
    keep = [n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose") and inputs & set(n.input)]
    producer = {out: n for n in model.graph.node for out in n.output}
    data = data_tensors(model)
    todo = [n for n in model.graph.node if {o.name for o in model.graph.output} & set(n.output)]
    while todo:  # walk back along each node's first data input (the skip Adds' upsampled one) to the last Conv
        node = todo.pop()
        keep.append(node.name)
        first = next((i for i in node.input if i in data), None)
        if node.op_type != "Conv" and first in producer:
            todo.append(producer[first])
    return sorted(set(keep))


def group_diagonal_deconvs(model: Any) -> list[str]:
    """Rewrite ConvTranspose layers whose weight is diagonal across classes (the fixed bilinear upsampling,
    dense [C, C, k, k] as in Caffe) into the identical grouped form ([C, 1, k, k], group=C): C times fewer
    multiply-adds. Done for the ONNX Runtime target only (grouped quantized ConvTranspose is a TensorRT trouble
    spot before 10.9). Returns the rewritten node names.

    The grouped weight is a new initializer: onnxslim shares one initializer between identical upsamplings
    (FCN-8s' upscore2 and upscore_pool4), and rewriting it in place turned the second layer, left at group=1,
    into a 1-channel output that broadcast over the classes in the following Add (wrong scores, and ONNX
    Runtime's MergeShapeInfo / buffer re-use warnings on every run)."""
    import numpy as np
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    grouped: dict[str, str] = {}  # dense weight name -> its grouped copy
    done = []
    for node in model.graph.node:
        if node.op_type != "ConvTranspose" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if any(a.name == "group" and a.i != 1 for a in node.attribute):
            continue
        name = node.input[1]
        if name not in grouped:
            w = numpy_helper.to_array(inits[name])
            c = w.shape[0]
            if w.ndim != 4 or w.shape[1] != c or c < 2:
                continue
            off = w.copy()
            off[np.arange(c), np.arange(c)] = 0
            if np.any(off):
                continue
            diag = np.ascontiguousarray(w[np.arange(c), np.arange(c)][:, None])
            new_name = f"{name}_grouped"
            model.graph.initializer.append(numpy_helper.from_array(diag, new_name))
            grouped[name] = new_name
        c = numpy_helper.to_array(inits[name]).shape[0]
        node.input[1] = grouped[name]
        kept = [a for a in node.attribute if a.name != "group"]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("group", c)])
        done.append(node.name)
    used = {i for n in model.graph.node for i in n.input}
    for name in grouped:  # a dense weight nothing reads any more
        if name not in used:
            model.graph.initializer.remove(inits[name])
    return done


def output_producers(model: Any) -> list[str]:
    """Nodes that produce a graph output: kept in float so no network output is ever quantized."""
    outputs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if outputs & set(n.output)]


def deconv_weight_axis0(model: Any) -> dict[str, list[dict[str, int]]]:
    """Per-tensor overrides putting every ConvTranspose weight's per-channel scales on axis 0 (its input channel).

    ORT's Conv/ConvTranspose quantizer ignores QDQOpTypePerChannelSupportToAxis (it passes no op type), so the
    axis is set per weight; TensorRT's deconvolution kernels take axis 0 or per-tensor scales only.
    """
    inits = {t.name for t in model.graph.initializer}
    return {n.input[1]: [{"axis": 0}] for n in model.graph.node
            if n.op_type == "ConvTranspose" and len(n.input) > 1 and n.input[1] in inits}  # fmt: skip


def unquantize_fusable_add_inputs(model: Any) -> list[str]:
    """On each Add with Q/DQ on both inputs, drop the pair on the input a Conv produced (NVIDIA's Q/DQ placement
    guide: TensorRT fuses Conv + Add only when that branch stays unquantized; the other input keeps its Q/DQ).
    Returns the Add nodes changed. Q/DQ pairs that feed other nodes too are left in place."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    changed, dead = [], set()
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        dqs = [producer.get(i) for i in node.input]
        if not all(d is not None and d.op_type == "DequantizeLinear" for d in dqs):
            continue
        for slot, dq in enumerate(dqs):
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue
            source = producer.get(q.input[0])
            if source is None or source.op_type != "Conv":
                continue
            if consumers.get(dq.output[0], 0) != 1 or consumers.get(q.output[0], 0) != 1:
                continue
            node.input[slot] = q.input[0]
            dead.update((id(q), id(dq)))
            changed.append(node.name)
            break  # one input stays quantized
    if dead:
        keep = [n for n in graph.node if id(n) not in dead]
        del graph.node[:]
        graph.node.extend(keep)
    return changed


def swap_rounded(model: Any, rounded: dict[str, Any], keep_float: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Point every Conv that gets quantized (not in `keep_float`) at its GPTQ-rounded weights (calibration.gptq) and
    return the per-channel overrides pinning each channel's range to the original weight's max |w|, so ONNX
    Runtime's quantizer derives the original scale and turns the grid values into exactly GPTQ's integers. Convs
    kept in float keep their FP32 weights."""
    import numpy as np
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    overrides: dict[str, list[dict[str, Any]]] = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name in keep_float or len(node.input) < 2 or node.input[1] not in rounded:
            continue
        name = node.input[1]
        new = f"{name}_gptq"
        if new not in overrides:
            absmax = np.abs(numpy_helper.to_array(inits[name])).reshape(len(rounded[name]), -1).max(axis=1)
            model.graph.initializer.append(numpy_helper.from_array(rounded[name], new))
            overrides[new] = [{"rmin": -float(a), "rmax": float(a)} for a in absmax]
            overrides[new][0]["axis"] = 0
        node.input[1] = new
    return overrides


def quantize_qdq(model: Any, ranges: dict[str, TensorRange], target: str, exclude_nodes: Sequence[str],
                 weight_bits: int | None = None, rounded: dict[str, Any] | None = None) -> Any:  # fmt: skip
    """Insert Q/DQ into `model` (an ONNX ModelProto with inferred shapes) and return the quantized ModelProto.

    weight_bits: 7 or 8 (choose_weight_bits); None: 8 for TensorRT, 7 (portable) for ONNX Runtime.
    rounded: GPTQ-rounded Conv weights for these bits (calibration.gptq.round_weights); None: round to nearest."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    if target not in TARGETS:
        raise FcnDeployError(f"--target {target!r}: choose one of {', '.join(TARGETS)}")
    if max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0) < 13:
        raise FcnDeployError("the model's opset is below 13 (per-channel Q/DQ needs 13); re-export it")
    symmetric = target == "tensorrt"
    reduce_range = (weight_bits or (8 if symmetric else 7)) == 7
    pick = TensorRange.symmetric if symmetric else TensorRange.asymmetric
    tensors_range = TensorsData(
        CalibrationMethod.MinMax,
        {name: tuple(np.float32(v) for v in pick(r)) for name, r in ranges.items()},
    )
    if target == "onnxruntime":
        group_diagonal_deconvs(model)
    op_types = op_types_to_quantize(target)
    keep_float = set(exclude_nodes) | set(output_producers(model)) | set(shape_only_nodes(model))
    overrides = swap_rounded(model, rounded, keep_float) if rounded else {}
    extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": symmetric}
    if target == "tensorrt":
        overrides.update(deconv_weight_axis0(model))
        extra.update(QuantizeBias=False, OpTypesToExcludeOutputQuantization=op_types)
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    quantizer = QDQQuantizer(
        model,
        True,  # per_channel
        reduce_range,  # 7-bit weights for U8S8 without VNNI, see the module docstring
        QuantType.QInt8,
        QuantType.QInt8 if symmetric else QuantType.QUInt8,
        tensors_range,
        [],  # nodes_to_quantize: all that op_types allow
        sorted(keep_float),
        op_types,
        extra,
    )
    quantizer.quantize_model()
    if target == "tensorrt":
        unquantize_fusable_add_inputs(quantizer.model.model)
    if target == "tensorrt" or rounded:
        _drop_unused_initializers(quantizer.model.model)  # removed pairs' scales, swapped weights (ORT warns)
    quantizer.model.topological_sort()  # the quantizer appends Q/DQ out of order; parsers and checker need order
    out = quantizer.model.model
    _check_outputs_float(out)
    onnx.checker.check_model(out)
    return out


def _drop_unused_initializers(model: Any) -> None:
    used = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    for t in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(t)


def _check_outputs_float(model: Any) -> None:
    outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and outputs & set(node.output):
            raise RuntimeError(f"quantizer put a DequantizeLinear ({node.name}) on a network output")


def is_lowered(model: Any) -> str | None:
    """Why `model` is already lowered (Q/DQ or FP16 tensors), or None for a plain FP32 graph."""
    import onnx

    for node in model.graph.node:
        if node.op_type in QDQ_OP_TYPES:
            return f"it already has {node.op_type} nodes"
    half = onnx.TensorProto.FLOAT16
    if any(t.data_type == half for t in model.graph.initializer):
        return "it already has FP16 weights"
    for vi in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        if vi.type.tensor_type.elem_type == half:
            return f"tensor {vi.name!r} is already FP16"
    return None
