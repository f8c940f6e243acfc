"""ONNX Runtime's TensorRT execution provider (issue 12 defect 4): its engine cache is keyed by the model's sha256,
and FP16 / Q/DQ graphs are built as FP16 / INT8 engines. No GPU needed: these are the options handed to ORT."""

from __future__ import annotations

import onnx
from test_calibration import tiny_fcn

from fcn_deploy.runtime.ort_backend import (
    TRT_CACHE,
    choose_providers,
    graph_precision,
    tensorrt_provider_options,
)

GPU_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def _trt_options(model_bytes, precision="fp32"):
    providers = choose_providers("cuda", GPU_PROVIDERS, model_bytes, precision)
    assert providers[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    name, options = providers[0]
    assert name == "TensorrtExecutionProvider"
    return options


def test_retrained_weights_get_their_own_engine_cache(tmp_path):
    a = tiny_fcn(tmp_path / "a.onnx", seed=0).read_bytes()
    b = tiny_fcn(tmp_path / "b.onnx", seed=1).read_bytes()  # same architecture and tensor names: ORT's id collides
    oa, ob = _trt_options(a), _trt_options(b)
    assert oa["trt_engine_cache_enable"] and ob["trt_engine_cache_enable"]
    assert oa["trt_engine_cache_path"] != ob["trt_engine_cache_path"]
    assert oa["trt_engine_cache_path"].startswith(str(TRT_CACHE))
    assert _trt_options(a) == oa  # the same model reuses its cache


def test_fp16_and_qdq_graphs_build_as_fp16_and_int8_engines(tmp_path):
    model = onnx.load(str(tiny_fcn(tmp_path / "m.onnx")))
    assert graph_precision(model) == "fp32"
    opts = tensorrt_provider_options(model.SerializeToString(), "fp32")
    assert not opts["trt_fp16_enable"] and not opts["trt_int8_enable"]
    fp16 = tensorrt_provider_options(b"x", "fp16")
    assert fp16["trt_fp16_enable"] and not fp16["trt_int8_enable"]
    int8 = tensorrt_provider_options(b"x", "int8")
    assert int8["trt_int8_enable"] and int8["trt_fp16_enable"]
    qdq = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("QuantizeLinear", ["x", "s"], ["q"]), onnx.helper.make_node("DequantizeLinear", ["q", "s"], ["y"])],
        "qdq", [], []))  # fmt: skip
    assert graph_precision(qdq) == "int8"


def test_cpu_and_no_tensorrt_provider_are_unchanged():
    assert choose_providers("cpu", GPU_PROVIDERS, b"x") == ["CPUExecutionProvider"]
    assert choose_providers("cuda", GPU_PROVIDERS[1:], b"x") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
