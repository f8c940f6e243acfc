"""FP16 by mixed precision: FP32 graph inputs/outputs, and FP32 kept wherever FP16 would overflow.

A node stays FP32 when its outputs exceeded `data_max` on the calibration images (ModelOpt AutoCast's rule and
default, 512: it leaves headroom for the sums inside the next layer) or when one of its weights does not fit in
FP16 (|w| > 65504), or when the user excluded it. The conversion itself is onnxconverter-common's float16
converter (pure Python, inserts the Cast nodes at FP16/FP32 boundaries). The result is then run on the calibration
images and refused if any tensor is inf/NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fcn_deploy.calibration.ranges import TensorRange
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.onnx_io import elem_types, shape_only_nodes

DATA_MAX = 512.0
FP16_MAX = 65504.0


def block_list(
    model: Any, absmax: dict[str, TensorRange], data_max: float, exclude_nodes: Sequence[str]
) -> list[str]:
    """Names of the nodes to keep in FP32."""
    from onnx import numpy_helper

    big_weights = {
        init.name
        for init in model.graph.initializer
        if init.data_type == 1 and np.abs(numpy_helper.to_array(init)).max(initial=0.0) > FP16_MAX
    }
    keep = set(exclude_nodes)
    shape_only = set(shape_only_nodes(model))  # their big values are tap distances, harmless in FP16
    for node in model.graph.node:
        if big_weights & set(node.input):
            keep.add(node.name)
        # a big input would be cast to FP16 on its way in, a big output overflow inside the node
        if node.name not in shape_only and any(name in absmax and absmax[name].amax > data_max for name in (*node.input, *node.output)):
            keep.add(node.name)
    return sorted(keep)


# onnxconverter-common keeps Resize/Upsample FP32 by default, with Casts around them: TensorRT and ONNX Runtime
# (CPU and CUDA) run them in FP16, so an FCN's upsampling would pay two casts per layer for nothing.
FP16_OPS = ("Resize", "Upsample")


def fp16_op_block_list(float16: Any) -> list[str]:
    return [op for op in float16.DEFAULT_OP_BLOCK_LIST if op not in FP16_OPS]


def float_resize_params(model: Any) -> None:
    """Resize/Upsample data runs FP16, but their roi/scales inputs must stay float32 (ONNX type constraint): the
    converter turned those initializers, and the Constant nodes of an unsimplified export, into FP16; give each
    such input a float32 initializer copy (a Constant that nothing else reads is removed)."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant" and n.output}
    for node in model.graph.node:
        if node.op_type not in FP16_OPS:
            continue
        for slot in (1, 2) if node.op_type == "Resize" else (1,):
            if slot >= len(node.input):
                continue
            source = node.input[slot]
            if source in inits:
                tensor = inits[source]
            elif source in constants:
                tensor = next((a.t for a in constants[source].attribute if a.name == "value"), None)
            else:
                continue
            if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT16:
                continue
            name = f"{source}_fp32"
            if name not in inits:
                copy = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), name)
                model.graph.initializer.append(copy)
                inits[name] = copy
            node.input[slot] = name
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    dead = [n for out, n in constants.items() if out not in read]
    for n in dead:
        model.graph.node.remove(n)


def convert(model: Any, keep_fp32: Sequence[str]) -> Any:
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise MissingDependencyError(
            "FP16 lowering needs onnxconverter-common: pip install onnxconverter-common"
        ) from None
    import warnings

    import onnx

    with warnings.catch_warnings():  # one warning per tiny weight flushed to FP16's smallest normal value
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=list(keep_fp32), max_finite_val=FP16_MAX,
            op_block_list=fp16_op_block_list(float16),
        )
    float_resize_params(converted)
    retype_float_casts(converted)
    return onnx.shape_inference.infer_shapes(converted)


def retype_float_casts(model: Any) -> None:
    """The converter retypes a Cast's output to FP16 but leaves its `to` at FLOAT (the matmul upsampling casts its
    integer tap distances to float): cast straight to FP16 there. Exact where it matters: the distances that survive
    its Relu are below 2 * stride (larger ones, rounded above 2048, still give 0)."""
    import onnx

    types = elem_types(model)
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    for node in model.graph.node:
        if node.op_type == "Cast" and types.get(node.output[0]) == half:
            for a in node.attribute:
                if a.name == "to" and a.i == single:
                    a.i = half


def half_nodes(model: Any, nodes: Sequence[str]) -> Any:
    """A copy of `model` (a Q/DQ INT8 graph) with only `nodes` computing in FP16, the strongly typed way that
    TensorRT 10.3 and 11 build as written: FP16 weights, one Cast to FP16 per float tensor entering the set and one
    Cast back per tensor leaving it, nothing else touched (no Q/DQ around them: the caller lowered them
    unquantized). Not onnxconverter-common's converter: with most of the graph blocked it routed tensors between
    two FP32 nodes through FP16 and back (rounding the INT8 part's inputs and adding Casts).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(model)  # a copy, with the element type of every tensor
    g, half = model.graph, set(nodes)
    types = elem_types(model)
    inits = {t.name: t for t in g.initializer}
    leaving = {o.name for o in g.output} | {i for n in g.node if n.name not in half for i in n.input}
    inside: dict[str, str] = {}  # FP32 tensor name -> its FP16 name inside the set
    order = []
    for node in g.node:
        if node.name not in half:
            order.append(node)
            continue
        for k, name in enumerate(node.input):
            if not name or types.get(name) != TensorProto.FLOAT:
                continue
            if name not in inside:
                inside[name] = f"{name}_fp16"
                if name in inits:
                    w = np.clip(numpy_helper.to_array(inits[name]), -FP16_MAX, FP16_MAX).astype(np.float16)
                    g.initializer.append(numpy_helper.from_array(w, inside[name]))
                else:
                    order.append(helper.make_node("Cast", [name], [inside[name]], name=f"{name}_to_fp16",
                                                  to=TensorProto.FLOAT16))  # fmt: skip
            node.input[k] = inside[name]
        order.append(node)
        for k, name in enumerate(node.output):
            if types.get(name) != TensorProto.FLOAT:
                continue
            inside[name] = node.output[k] = f"{name}_fp16"
            if name in leaving:
                order.append(helper.make_node("Cast", [inside[name]], [name], name=f"{name}_to_fp32",
                                              to=TensorProto.FLOAT))  # fmt: skip
    del g.node[:]
    g.node.extend(order)
    kept_info = [vi for vi in g.value_info if vi.name not in inside]
    del g.value_info[:]
    g.value_info.extend(kept_info)
    used = {i for n in g.node for i in n.input}
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)
    onnx.checker.check_model(model)
    return model


def nonfinite_nodes(model: Any, feeds: Iterable[dict[str, np.ndarray]]) -> list[str]:
    """Nodes producing an inf/NaN on any feed, in graph order (empty when all is finite)."""
    import onnx
    import onnxruntime as ort

    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    typed = {vi.name: vi for vi in (*model.graph.value_info, *model.graph.output)}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    producer: dict[str, str] = {}
    for node in probe.graph.node:
        for name in node.output:
            vi = typed.get(name)
            if vi is not None and vi.type.tensor_type.elem_type in float_types:
                producer[name] = node.name
                if name not in existing:
                    probe.graph.output.append(vi)
    names = list(producer)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    bad: set[str] = set()
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            if not np.isfinite(value).all():
                bad.add(producer[name])
    return [n.name for n in model.graph.node if n.name in bad]


def _blame(converted: Any, bad: Sequence[str], original: set[str]) -> set[str]:
    """Nodes of the FP32 graph to keep FP32 for `bad` nodes; a Cast the converter inserted blames its consumers."""
    blamed: set[str] = set()
    todo, seen = list(bad), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in original:
            blamed.add(name)
            continue
        node = next((n for n in converted.graph.node if n.name == name), None)
        outs = set(node.output) if node is not None else set()
        todo += [c.name for c in converted.graph.node if outs & set(c.input)]
    return blamed


def lower(model: Any, keep_fp32: Sequence[str], feeds_factory, max_rounds: int = 3) -> tuple[Any, list[str]]:
    """Convert, check on the calibration feeds, and keep any overflowing node FP32 until the result is finite."""
    keep = list(keep_fp32)
    original = {n.name for n in model.graph.node}
    for _ in range(max_rounds):
        converted = convert(model, keep)
        bad = nonfinite_nodes(converted, feeds_factory())
        if not bad:
            return converted, keep
        keep = sorted(set(keep) | _blame(converted, bad, original))
    raise FcnDeployError(
        f"FP16 model still produces inf/NaN on calibration images at nodes {bad[:5]}; "
        "keep them FP32 with --exclude or lower --fp16-max-activation"
    )
