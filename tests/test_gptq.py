"""GPTQ weight rounding (calibration.gptq): less Conv output error than round-to-nearest on the same grid, and the
quantizer writes exactly its integers for the Convs it quantizes, never for those kept in float."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper
from test_precision_plan import fragile_fcn, write_images

from fcn_deploy.calibration import gptq
from fcn_deploy.calibration.api import QuantizeConfig, quantize
from fcn_deploy.calibration.images import from_folder
from fcn_deploy.calibration.int8 import prepare, quantize_qdq
from fcn_deploy.calibration.ranges import TensorRange
from fcn_deploy.calibration.reader import ImageReader
from fcn_deploy.cli import main
from fcn_deploy.core.card import ModelCard


def output_error(w: np.ndarray, q: np.ndarray, h: np.ndarray) -> float:
    """Sum over calibration positions of |(W - Q) x|^2 = tr(D H D^T)."""
    d = w - q
    return float(np.einsum("ij,jk,ik->", d, h, d))


def test_gptq_beats_round_to_nearest_on_correlated_inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((36, 36)) @ rng.standard_normal((36, 2000))  # correlated inputs: GPTQ's case
    h = x @ x.T
    w = rng.standard_normal((8, 36))
    scale = np.abs(w).max(axis=1) / 127
    q = gptq.gptq(w, h, scale, 127)
    nearest = np.clip(np.round(w / scale[:, None]), -127, 127)
    assert np.array_equal(q, np.round(q)) and np.abs(q).max() <= 127
    assert not np.array_equal(q, nearest)
    s = scale[:, None]
    assert output_error(w, q * s, h) < 0.8 * output_error(w, nearest * s, h)


@pytest.mark.parametrize(("bits", "qmax"), [(8, 127), (7, 64)])  # 7: ONNX Runtime's reduce_range grid
def test_quantize_writes_gptqs_integers_on_the_original_grid(tmp_path, bits, qmax):
    model_path = fragile_fcn(tmp_path / "m.onnx", fragile=False)
    calib = write_images(tmp_path / "c", 10)
    kw = dict(precision="int8", target="onnxruntime", method="minmax", num_images=8, plan_images=2, latency_runs=1,
              calib_data=calib, max_drop=100.0, weight_bits=bits)  # fmt: skip
    by_gptq = quantize(QuantizeConfig(model=model_path, output=tmp_path / "g.onnx", weight_rounding="gptq", **kw))
    nearest = quantize(QuantizeConfig(model=model_path, output=tmp_path / "n.onnx", **kw))  # the default without --auto
    assert by_gptq.summary["weight_rounding"] == "gptq" and by_gptq.summary["gptq_weights"] >= 1
    assert nearest.summary["weight_rounding"] == "nearest" and nearest.summary["gptq_weights"] == 0
    lowering = ModelCard.from_onnx(onnx.load(str(by_gptq.output)), "g").provenance["lowering"]
    assert lowering["weight_rounding"] == "gptq"

    def conv2_weights(path):  # (int8 weights, per-channel scales) of the quantized conv2
        m = onnx.load(str(path))
        inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        producer = {o: n for n in m.graph.node for o in n.output}
        conv = next(n for n in m.graph.node if n.name == "conv2")
        dq = producer[conv.input[1]]
        return inits[dq.input[0]].astype(np.int32), inits[dq.input[1]]

    qg, sg = conv2_weights(by_gptq.output)
    qn, sn = conv2_weights(nearest.output)
    np.testing.assert_array_equal(sg, sn)  # the grid is pinned to the original per-channel max |w|
    assert not np.array_equal(qg, qn) and np.abs(qg).max() <= np.abs(qn).max() == qmax
    # what GPTQ minimises, measured on conv2's FP32 input over the same calibration images
    images, _ = from_folder(calib, 8, 0, 0)
    card = ModelCard.from_onnx(onnx.load(str(model_path)), "m")
    prepared_path = prepare(model_path, tmp_path / "p.onnx")
    prepared = onnx.load(str(prepared_path))
    node = next(n for n in prepared.graph.node if n.name == "conv2")
    reader = ImageReader(images, card.normalization, card.input_name)
    feeds = iter(lambda: reader.get_next(), None)
    h = gptq.second_moments(prepared_path, feeds, [node])["conv2"]
    w = numpy_helper.to_array(next(t for t in prepared.graph.initializer if t.name == node.input[1]))
    w = w.reshape(w.shape[0], -1).astype(np.float64)
    s = sg.astype(np.float64)[:, None]
    err_g = output_error(w, qg.reshape(len(qg), -1) * s, h)
    err_n = output_error(w, qn.reshape(len(qn), -1) * s, h)
    assert err_g < err_n


def test_a_conv_kept_in_float_keeps_its_fp32_weights(tmp_path):
    model_path = fragile_fcn(tmp_path / "m.onnx", fragile=False)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
    w = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "c2.w")
    grid = np.round(w * 10) / 10  # any values: the point is they must not reach a float Conv
    ranges = {n: TensorRange(-4.0, 4.0, 4.0) for v in model.graph.node for n in v.input if not n.endswith((".w", ".b"))}
    lowered = quantize_qdq(model, ranges, "onnxruntime", ["conv2"], 8, {"c2.w": grid})
    conv = next(n for n in lowered.graph.node if n.name == "conv2")
    inits = {t.name: numpy_helper.to_array(t) for t in lowered.graph.initializer}
    np.testing.assert_array_equal(inits[conv.input[1]], w)
    assert not any(name.endswith("_gptq") for name in inits)


@pytest.mark.parametrize("extra", [["--fp16"], ["--int8", "--weight-rounding", "best"]])
def test_weight_rounding_refusals(tmp_path, extra):
    model = fragile_fcn(tmp_path / "m.onnx", fragile=False)
    calib = write_images(tmp_path / "c", 4)
    args = ["quantize", str(model), *extra, "--calib-data", str(calib)]
    if extra == ["--fp16"]:
        args += ["--weight-rounding", "nearest"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code in (1, 2) and "--weight-rounding" in r.output and "Traceback" not in r.output, r.output


def test_the_chain_lowers_again_for_another_weight_rounding(tmp_path):
    from fcn_deploy.chain.lowered import LoweredOnnx

    model = fragile_fcn(tmp_path / "m.onnx", fragile=False)
    calib = write_images(tmp_path / "c", 8)
    out = tmp_path / "l.int8.onnx"
    calibration = {"calib_data": calib, "num_images": 6, "method": "minmax", "plan_images": 2, "max_drop": 100.0}
    LoweredOnnx(model, "int8", out, target="onnxruntime", calibration=calibration)()
    same = LoweredOnnx(model, "int8", out, target="onnxruntime", calibration={**calibration, "weight_rounding": "nearest"})
    assert same.mismatch(out, model) is None  # nearest is the default without --auto
    other = LoweredOnnx(model, "int8", out, target="onnxruntime", calibration={**calibration, "weight_rounding": "gptq"})
    assert "weight_rounding" in other.mismatch(out, model)
