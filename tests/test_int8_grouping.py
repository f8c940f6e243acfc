"""The ONNX Runtime INT8 target's grouped-upsampling rewrite on a shared weight (onnxslim shares one initializer
between FCN-8s' identical upsamplings): every user is rewritten, the output is unchanged, and the lowered graph's
shapes infer cleanly in strict mode (no MergeShapeInfo conflict, no 1-channel deconv broadcast over classes)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fcn_deploy.calibration.int8 import group_diagonal_deconvs
from fcn_deploy.cli import main


def test_shared_diagonal_weight_is_grouped_for_every_user():
    c, k = 4, 4
    w = np.zeros((c, c, k, k), np.float32)
    w[np.arange(c), np.arange(c)] = np.random.default_rng(0).random((c, k, k), np.float32)
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["a"], name="up1", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["a", "w"], ["b"], name="up2", strides=[2, 2], pads=[1, 1, 1, 1], group=1),
        helper.make_node("Add", ["b", "skip"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 5, 7]),
         helper.make_tensor_value_info("skip", TensorProto.FLOAT, [1, c, 20, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, c, 5, 7)).astype(np.float32)
    skip = rng.standard_normal((1, c, 20, 28)).astype(np.float32)

    def run(m):
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x, "skip": skip})[0]

    before = run(model)
    assert group_diagonal_deconvs(model) == ["up1", "up2"]
    groups = {n.name: [a.i for a in n.attribute if a.name == "group"] for n in model.graph.node if n.name != "add"}
    assert groups == {"up1": [c], "up2": [c]}
    assert [t.name for t in model.graph.initializer] == ["w_grouped"]  # the dense weight nothing reads is gone
    onnx.shape_inference.infer_shapes(model, strict_mode=True)  # the value info inferred before still holds
    np.testing.assert_allclose(run(model), before, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_lowered_fcn8s_shapes_infer_cleanly(tmp_path):
    """The real path: an FCN-8s deconv export (onnxslim shares its upsampling weights) lowered for ONNX Runtime INT8."""
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    r = CliRunner().invoke(main, ["export", "--variant", "fcn8s", "--width", "0.0625", "--num-classes", "4",
                                  "--padding", "same", "--upsample", "deconv", "-o", str(fp32)])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["quantize", str(fp32), "--int8", "--target", "onnxruntime", "--calib-dataset",
                                  "synthetic:train", "--num-images", "4", "-o", str(int8)])  # fmt: skip
    assert r.exit_code == 0, r.output
    lowered = onnx.load(str(int8))
    deconvs = [n for n in lowered.graph.node if n.op_type == "ConvTranspose"]
    assert deconvs and all(any(a.name == "group" and a.i == 4 for a in n.attribute) for n in deconvs)
    onnx.shape_inference.infer_shapes(lowered, strict_mode=True)
    # and the two graphs agree on nearly every pixel (a 1-channel deconv broadcast made this ~50%)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    name = onnx.load(str(fp32)).graph.input[0].name
    a = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    b = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    assert np.mean(a == b) > 0.9
