"""Lowering for TensorRT (issue 12 defect 8): FP16 graphs run Resize in FP16 (no Casts around it), and INT8 Q/DQ
on a skip Add leaves the Conv branch unquantized so TensorRT can fuse Conv + Add (NVIDIA's Q/DQ placement guide)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def resize_model(scales_from: str = "initializer") -> onnx.ModelProto:
    """Conv -> Resize x2 -> Relu; the scales an initializer (a simplified export) or a Constant node (--no-simplify)."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32), "w")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["c", "", "scales"], ["up"], name="up", mode="linear"),
        helper.make_node("Relu", ["up"], ["out"], name="relu"),
    ]
    inits = [w, scales]
    if scales_from == "constant":
        nodes.insert(0, helper.make_node("Constant", [], ["scales"], name="scales_const", value=scales))
        inits = [w]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 16, 16])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("scales_from", ["initializer", "constant"])
def test_fp16_keeps_resize_in_fp16_without_casts(scales_from):
    import onnxruntime as ort

    from fcn_deploy.calibration.fp16 import convert

    model = resize_model(scales_from)
    half = convert(model, [])
    onnx.checker.check_model(half, full_check=True)  # the scales stay float32 (an FP16 Constant was invalid)
    producer = {o: n for n in half.graph.node for o in n.output}
    resize = next(n for n in half.graph.node if n.op_type == "Resize")
    assert producer[resize.input[0]].op_type == "Conv"  # no Cast between Conv and Resize
    casts = [n for n in half.graph.node if n.op_type == "Cast"]
    assert len(casts) == 2  # only the FP32 input and output
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    got = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    np.testing.assert_allclose(got[0], ref[0], atol=2e-2, rtol=2e-2)


def test_int8_skip_add_keeps_qdq_on_one_input_only(tmp_path):
    from test_calibration import cfg, tiny_fcn, write_images

    from fcn_deploy.calibration.api import quantize

    model_path = tiny_fcn(tmp_path / "m.onnx")
    calib = write_images(tmp_path / "calib", 3)
    q = onnx.load(str(quantize(cfg(model_path, calib, method="minmax", float_ends=False)).output))
    producer = {o: n for n in q.graph.node for o in n.output}
    add = next(n for n in q.graph.node if n.op_type == "Add")
    kinds = sorted(producer[i].op_type for i in add.input)
    assert kinds == ["Conv", "DequantizeLinear"], kinds  # the Conv branch fuses; the upsampled branch is quantized
    onnx.checker.check_model(q)
