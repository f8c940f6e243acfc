"""INT8 weight bits by instruction set (int8.choose_weight_bits): ONNX Runtime's U8S8 kernels saturate with 8-bit
weights on AVX2 only, so `--target onnxruntime` uses 7-bit weights there and 8-bit on CPUs with VNNI or AMX-INT8,
chosen from the quantizing CPU's flags, overridable (--weight-bits) and recorded in the provenance."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper
from test_precision_plan import fragile_fcn, write_images

from fcn_deploy.calibration.api import QuantizeConfig, quantize
from fcn_deploy.calibration.int8 import choose_weight_bits
from fcn_deploy.cli import main
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.environment import CPU_FLAGS, cpu_flags
from fcn_deploy.core.errors import FcnDeployError

AVX2_ONLY = dict.fromkeys(CPU_FLAGS, False)


@pytest.mark.parametrize("flag", ["avx512_vnni", "avx_vnni", "amx_int8"])
def test_vnni_or_amx_gets_8_bit_weights_avx2_gets_7(flag):
    bits, why = choose_weight_bits("onnxruntime", flags={**AVX2_ONLY, flag: True})
    assert bits == 8 and flag in why
    bits, why = choose_weight_bits("onnxruntime", flags=AVX2_ONLY)
    assert bits == 7 and "saturate" in why
    assert choose_weight_bits("onnxruntime", flags=None)[0] in (7, 8)  # this machine's own flags
    assert choose_weight_bits("onnxruntime", 8, flags=AVX2_ONLY) == (8, "--weight-bits 8")
    assert choose_weight_bits("onnxruntime", 7, flags={**AVX2_ONLY, flag: True}) == (7, "--weight-bits 7")
    assert choose_weight_bits("tensorrt", flags=AVX2_ONLY)[0] == 8
    with pytest.raises(FcnDeployError, match="--weight-bits 7 applies to --target onnxruntime"):
        choose_weight_bits("tensorrt", 7)
    with pytest.raises(FcnDeployError, match="choose 7 or 8"):
        choose_weight_bits("onnxruntime", 6)


def int8_weight_max(path) -> int:
    model = onnx.load(str(path))
    ints = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    return max(int(np.abs(w.astype(np.int32)).max()) for w in ints if w.ndim == 4)


def test_ort_target_chooses_from_this_cpu_and_the_override_changes_the_weights(tmp_path):
    model = fragile_fcn(tmp_path / "m.onnx", fragile=False)
    calib = write_images(tmp_path / "c", 8)
    kw = dict(precision="int8", target="onnxruntime", method="minmax", num_images=6, plan_images=2, latency_runs=1,
              calib_data=calib, max_drop=100.0)  # fmt: skip
    chosen = quantize(QuantizeConfig(model=model, **kw))
    lowering = ModelCard.from_onnx(onnx.load(str(chosen.output)), str(chosen.output)).provenance["lowering"]
    flags = cpu_flags() or {}
    vnni = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if flags.get(f)]
    assert lowering["weight_bits"] == (8 if vnni else 7) == chosen.summary["weight_bits"]
    assert all(f in lowering["weight_bits_reason"] for f in vnni)
    seven = quantize(QuantizeConfig(model=model, weight_bits=7, output=tmp_path / "7.onnx", **kw))
    eight = quantize(QuantizeConfig(model=model, weight_bits=8, output=tmp_path / "8.onnx", **kw))
    assert seven.summary["weight_bits"] == 7 and seven.summary["weight_bits_reason"] == "--weight-bits 7"
    assert int8_weight_max(seven.output) <= 64 < int8_weight_max(eight.output) <= 127


def test_weight_bits_cli_refusals_and_chain_reuse(tmp_path):
    from fcn_deploy.chain.lowered import LoweredOnnx

    model = fragile_fcn(tmp_path / "m.onnx", fragile=False)
    calib = write_images(tmp_path / "c", 8)
    for extra in (["--int8", "--target", "tensorrt"], ["--fp16"]):
        r = CliRunner().invoke(main, ["quantize", str(model), *extra, "--weight-bits", "7", "--calib-data", str(calib)])
        errors = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
        assert r.exit_code == 1 and len(errors) == 1 and "--weight-bits" in errors[0], r.output
    out = tmp_path / "l.int8.onnx"
    calibration = {"calib_data": calib, "num_images": 6, "method": "minmax", "plan_images": 2, "max_drop": 100.0}
    LoweredOnnx(model, "int8", out, target="onnxruntime", calibration={**calibration, "weight_bits": 7})()
    again = LoweredOnnx(model, "int8", out, target="onnxruntime", calibration={**calibration, "weight_bits": 7})
    assert again.mismatch(out, model) is None
    other = LoweredOnnx(model, "int8", out, target="onnxruntime", calibration={**calibration, "weight_bits": 8})
    assert "weight_bits" in other.mismatch(out, model)


def test_the_rule_matches_what_onnx_runtime_computes_on_this_cpu():
    """A conv whose every uint8 x int8 pair is 255 x 127: AVX2's U8S8 kernel (VPMADDUBSW) saturates each pair sum at
    32767 (64770 wanted) and the output halves; VNNI/AMX kernels accumulate in int32. Where 8-bit weights are chosen
    they must come out exact on this CPU, where 7-bit are chosen 8-bit must visibly saturate."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from fcn_deploy.calibration.int8 import quantize_qdq
    from fcn_deploy.calibration.ranges import TensorRange

    flags = cpu_flags()
    if flags is None:
        pytest.skip("no x86 CPU flags here: the rule is about x86 U8S8 kernels")
    c = 64
    w = np.full((8, c, 3, 3), 1.0 / (c * 9), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "sat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], [numpy_helper.from_array(w, "w")])  # fmt: skip
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    ranges = {name: TensorRange(0.0, 1.0, 1.0) for name in ("x", "c")}
    lowered = quantize_qdq(model, ranges, "onnxruntime", [], weight_bits=8)
    x = np.ones((1, c, 16, 16), np.float32)
    y = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    exact = abs(float(y[0, 0, 8, 8]) - 1.0) < 0.02  # interior pixel: FP32 gives exactly 1
    assert exact == (choose_weight_bits("onnxruntime")[0] == 8), (float(y[0, 0, 8, 8]), flags)
