"""The ONNX Runtime INT8 target's grouped-upsampling rewrite on a shared weight (onnxslim shares one initializer
between FCN-8s' identical upsamplings): every user is rewritten, the output is unchanged, and the lowered graph's
shapes infer cleanly in strict mode (no MergeShapeInfo conflict, no 1-channel deconv broadcast over classes); and the
matmul upsampling's shape-computed matrices, which no lowering may quantize."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fcn_deploy.calibration.api import QuantizeConfig, quantize
from fcn_deploy.calibration.int8 import float_ends as float_ends_of
from fcn_deploy.calibration.int8 import group_diagonal_deconvs
from fcn_deploy.cli import main
from fcn_deploy.core.onnx_io import shape_only_nodes


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


@pytest.fixture(scope="module")
def matmul_fcn8s(tmp_path_factory):
    """A small FCN-8s exported with the matmul upsampling (interpolation matrices computed from shapes)."""
    path = tmp_path_factory.mktemp("mm") / "m.onnx"
    r = CliRunner().invoke(main, ["export", "--variant", "fcn8s", "--width", "0.0625", "--num-classes", "4",
                                  "--padding", "same", "--upsample", "matmul", "-o", str(path)])  # fmt: skip
    assert r.exit_code == 0, r.output
    return path


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
@pytest.mark.parametrize("float_ends", [True, False])
def test_matmul_upsampling_is_never_quantized_as_an_activation(matmul_fcn8s, tmp_path, target, float_ends):
    """The nodes that build the interpolation matrices read only shapes: no lowering puts Q/DQ on them (ORT's
    flavour would quantize their Relu/Div), and the head walk of float_ends follows the MatMuls' data input (the
    matrix is input 0 of the height pass) back to score_fr, so the decoder stays float."""
    fp32 = onnx.load(str(matmul_fcn8s))
    shape_only = set(shape_only_nodes(fp32))
    assert {n.name for n in fp32.graph.node if n.op_type == "Range"} <= shape_only
    ends = set(float_ends_of(fp32))
    assert {n.name for n in fp32.graph.node if n.op_type == "MatMul"} <= ends and "/model/score_fr/Conv" in ends
    out = tmp_path / "m.int8.onnx"
    quantize(QuantizeConfig(model=matmul_fcn8s, precision="int8", output=out, target=target,
                            calib_dataset="synthetic:train", num_images=4, float_ends=float_ends,
                            latency_runs=1))  # fmt: skip
    lowered = onnx.load(str(out))
    dq_out = {n.output[0] for n in lowered.graph.node if n.op_type == "DequantizeLinear"}
    for node in lowered.graph.node:
        if node.name in shape_only:
            assert not dq_out & set(node.input), node.name
        if node.op_type == "MatMul" and float_ends:
            assert not dq_out & set(node.input), node.name
    assert dq_out  # the trunk is quantized
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    a = ort.InferenceSession(str(matmul_fcn8s), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert a.shape == b.shape == (1, 64, 64) and np.mean(a == b) > 0.9


@pytest.mark.slow
def test_matmul_upsampling_lowers_to_fp16(matmul_fcn8s, tmp_path):
    """FP16 retypes the matrices' int-to-float Casts (fp16.retype_float_casts): the graph loads and agrees."""
    out = tmp_path / "m.fp16.onnx"
    quantize(QuantizeConfig(model=matmul_fcn8s, precision="fp16", output=out, calib_dataset="synthetic:train",
                            num_images=4, latency_runs=1))  # fmt: skip
    casts = [n for n in onnx.load(str(out)).graph.node if n.op_type == "Cast" and "upscore8" in n.name]
    assert casts and all(a.i == TensorProto.FLOAT16 for n in casts for a in n.attribute if a.name == "to")
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    a = ort.InferenceSession(str(matmul_fcn8s), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert np.mean(a == b) > 0.99
