"""The OpenVINO backend on real compiled models: FP32 equals ONNX Runtime, BF16 refused where the CPU lacks it,
a Q/DQ graph runs int8 kernels, the model cache is keyed by the ONNX sha256 and the options."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_runtime_helpers import channel_card, make_channel_model

from fcn_deploy.core.errors import FcnDeployError

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'fcn-deploy[cpu]')")

from fcn_deploy.runtime.openvino_backend import (  # noqa: E402 - after the skip
    OpenVinoBackend,
    bf16_refusal,
    cache_dir_for,
    check_precision,
    default_precision,
)
from fcn_deploy.runtime.ort_backend import OrtBackend  # noqa: E402

FLAGS_AMX = "flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8 amx_tile"
FLAGS_AVX2 = "flags\t\t: fpu sse sse2 avx avx2 fma"  # an AVX2-only AMD EPYC / older Xeon


def _batch(shape=(1, 3, 24, 40), seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "ov-cache"


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    """Backends opened through the factory and the CLIs compile into the test's folder, not ~/.cache."""
    monkeypatch.setattr("fcn_deploy.runtime.openvino_backend.CACHE_ROOT", tmp_path / "home-cache")


def test_fp32_equals_onnx_runtime(tmp_path, cache):
    path = make_channel_model(tmp_path / "m.onnx", ("labels", "logits"), heavy_layers=3)
    ort, vino = OrtBackend(path), OpenVinoBackend(path, precision="fp32", cache_root=cache)
    for shape in ((1, 3, 24, 40), (2, 3, 17, 33)):
        batch = _batch(shape)
        a, b = ort.run(batch), vino.run(batch)
        np.testing.assert_array_equal(b["labels"], a["labels"])
        np.testing.assert_allclose(b["logits"], a["logits"], rtol=1e-5, atol=1e-5)
    assert vino.execution_precision() == "f32"
    assert vino.compiled_shapes == [(1, 3, 24, 40), (2, 3, 17, 33)]
    vino.run(_batch((1, 3, 24, 40), seed=1))  # same shape: no new compile
    assert len(vino.compiled_shapes) == 2
    assert vino.output_kinds == ("logits",) and vino.input_sizes == ort.input_sizes
    d = vino.describe()
    assert d["backend"] == "openvino" and d["precision"] == "fp32"
    assert d["options"]["INFERENCE_PRECISION_HINT"] == "f32"


def test_probs_head_and_in_memory_model_with_a_given_card(tmp_path, cache):
    bare = make_channel_model(tmp_path / "bare.onnx", ("labels", "probs"), card=False)
    with pytest.raises(FcnDeployError, match="model card"):
        OpenVinoBackend(bare, cache_root=cache)
    vino = OpenVinoBackend(bare.read_bytes(), card=channel_card(("labels", "probs")), cache_root=cache)
    out = vino.run(_batch())
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, rtol=1e-5)
    assert vino.describe()["model"] == "in memory"


def test_static_graph_declares_its_size(tmp_path, cache):
    path = make_channel_model(tmp_path / "m.onnx", ("labels",))
    model = onnx.load(str(path))
    for d, v in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], (20, 30), strict=True):
        d.dim_value = v
    onnx.save(model, str(tmp_path / "static.onnx"))
    vino = OpenVinoBackend(tmp_path / "static.onnx", cache_root=cache)
    assert vino.input_sizes.fixed == (20, 30)
    assert vino.run(_batch((1, 3, 20, 30)))["labels"].shape == (1, 20, 30)


def test_bf16_refusal_reads_the_cpu_flags():
    assert bf16_refusal([FLAGS_AMX]) is None
    assert bf16_refusal(["flags\t\t: avx2 avx512_bf16"]) is None
    reason = bf16_refusal([FLAGS_AVX2])
    assert "avx512_bf16" in reason and "amx_bf16" in reason
    assert "no instruction-set flags" in bf16_refusal(["processor : 0"])
    with pytest.raises(FcnDeployError, match=r"--precision bf16: this CPU has neither .*--precision fp32"):
        check_precision("bf16", [FLAGS_AVX2])
    check_precision("bf16", [FLAGS_AMX])
    check_precision("fp32", [FLAGS_AVX2])
    with pytest.raises(FcnDeployError, match="takes fp32, bf16"):
        check_precision("fp16", [FLAGS_AMX])


def test_bf16_without_amx_runs_but_warns_once_that_fp32_is_faster(caplog):
    from fcn_deploy.runtime import openvino_backend

    openvino_backend._warn_bf16_without_amx.cache_clear()
    with caplog.at_level(logging.WARNING, logger="fcn_deploy.runtime.openvino_backend"):
        check_precision("bf16", [FLAGS_AMX])
        assert not caplog.records
        for _ in range(3):
            check_precision("bf16", ["flags\t\t: avx2 avx512_bf16"])
    (line,) = [r.getMessage() for r in caplog.records]
    assert "without AMX" in line and "slower than FP32" in line


def test_bf16_on_this_cpu(tmp_path, cache):
    """Runs on the matrix units where this CPU has them, refused in one line where it does not."""
    path = make_channel_model(tmp_path / "m.onnx", ("labels", "logits"), heavy_layers=3)
    reason = bf16_refusal()
    if reason:
        with pytest.raises(FcnDeployError, match="--precision bf16"):
            OpenVinoBackend(path, precision="bf16", cache_root=cache)
        return
    vino = OpenVinoBackend(path, precision="bf16", cache_root=cache)
    batch = _batch()
    out, ref = vino.run(batch), OrtBackend(path).run(batch)
    assert vino.execution_precision() == "bf16"
    assert not np.array_equal(out["logits"], ref["logits"])  # it really computed in BF16
    np.testing.assert_allclose(out["logits"], ref["logits"], atol=0.05)
    assert (out["labels"] == ref["labels"]).mean() > 0.95


def _qdq_model(path, seed=0, weight_bits=8):
    """image -> Q/DQ (int8, per tensor) -> Conv with per-channel int8 Q/DQ weights -> ReLU -> Q/DQ -> 1x1 Conv
    (int8 weights) -> ArgMax: the graph `quantize --target tensorrt` writes, in miniature."""
    rng = np.random.default_rng(seed)
    top = 2 ** (weight_bits - 1) - 1
    w1 = (rng.standard_normal((16, 3, 3, 3)) * 0.5).astype(np.float32)
    w2 = (rng.standard_normal((3, 16, 1, 1)) * 0.5).astype(np.float32)
    inits, nodes = [], []

    def weight(name, w):
        scale = (np.abs(w).reshape(w.shape[0], -1).max(axis=1) / top).astype(np.float32)
        q = np.clip(np.round(w / scale[:, None, None, None]), -top, top).astype(np.int8)
        inits.extend([numpy_helper.from_array(q, f"{name}_q"), numpy_helper.from_array(scale, f"{name}_s"),
                      numpy_helper.from_array(np.zeros(w.shape[0], np.int8), f"{name}_z")])  # fmt: skip
        nodes.append(
            helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [name], axis=0)
        )

    def act(src, dst, scale):
        inits.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{dst}_s"),
                      numpy_helper.from_array(np.array(0, np.int8), f"{dst}_z")])  # fmt: skip
        nodes.append(helper.make_node("QuantizeLinear", [src, f"{dst}_s", f"{dst}_z"], [f"{dst}_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{dst}_q", f"{dst}_s", f"{dst}_z"], [dst]))

    weight("w1", w1)
    weight("w2", w2)
    act("image", "x0", 1 / 127)
    nodes.append(helper.make_node("Conv", ["x0", "w1"], ["c1"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    act("r1", "x1", 4 / 127)
    nodes.append(helper.make_node("Conv", ["x1", "w2"], ["logits"]))
    nodes.append(helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0))
    dims = ["N", 3, "H", "W"]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", "H", "W"]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, dims)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    channel_card(("labels", "logits")).attach(model)
    onnx.save(model, str(path))
    return path


def test_int8_qdq_graph_runs_int8_kernels(tmp_path, cache):
    # Weights as wide as `quantize` makes them for this CPU: on AVX2 without VNNI, OpenVINO's u8 x s8 kernels
    # saturate with 8-bit weights as ONNX Runtime's do (scores off by ~0.15 here), so the rule's 7 bits there.
    from fcn_deploy.calibration.int8 import choose_weight_bits

    path = _qdq_model(tmp_path / "q.onnx", weight_bits=choose_weight_bits("onnxruntime", None)[0])
    vino = OpenVinoBackend(path, cache_root=cache)
    batch = _batch((1, 3, 32, 32))
    out, ref = vino.run(batch), OrtBackend(path).run(batch)
    # The fake-quant semantics match ONNX Runtime's: same scores up to rounding at the quantization steps.
    np.testing.assert_allclose(out["logits"], ref["logits"], atol=0.1)
    assert (out["labels"] == ref["labels"]).mean() > 0.97
    precisions = _conv_precisions(vino, (1, 3, 32, 32))
    assert precisions & {"i8", "u8"}, precisions  # the convolutions run as int8, not de-quantized FP32


def _conv_precisions(vino, shape):
    """The runtime precisions of the compiled model's convolutions at `shape`."""
    compiled = vino._compiled[shape][0]
    return {
        op.get_rt_info()["runtimePrecision"].astype(str).lower()
        for op in compiled.get_runtime_model().get_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    }


def test_int8_graph_runs_its_float_layers_in_bf16_on_amx_by_default(tmp_path, cache, caplog):
    assert default_precision("int8", [FLAGS_AMX]) == "bf16"
    assert default_precision("fp32", [FLAGS_AMX]) == "fp32"  # an FP32 graph stays exact
    assert default_precision("fp16", [FLAGS_AMX]) == "fp32"
    assert default_precision("int8", [FLAGS_AVX2]) == "fp32"
    assert default_precision("int8", ["flags\t\t: avx2 avx512_bf16"]) == "fp32"  # no AMX: BF16 is slower there
    assert default_precision("int8", ["processor : 0"]) == "fp32"

    from fcn_deploy.chain.backends import open_backend

    path = _lowered_copy(_qdq_model(tmp_path / "q.onnx"), tmp_path / "q.ort.onnx", "int8", "onnxruntime")
    with caplog.at_level(logging.INFO, logger="fcn_deploy.runtime.openvino_backend"):
        vino = open_backend(path, "openvino")
    fp32 = OpenVinoBackend(path, precision="fp32", cache_root=cache)
    assert fp32.precision == "fp32" and open_backend(path, "openvino", precision="fp32").precision == "fp32"
    batch = _batch((1, 3, 32, 32))
    out, ref = vino.run(batch), fp32.run(batch)
    assert (out["labels"] == ref["labels"]).mean() > 0.97
    if default_precision("int8") == "fp32":  # this CPU has no AMX-BF16: nothing changes
        assert vino.precision == "fp32" and not caplog.records
        return
    assert vino.precision == "bf16" and vino.execution_precision() == "bf16"
    assert vino.describe()["graph_precision"] == "int8" and vino.describe()["precision"] == "bf16"
    assert vino.cache_dir != fp32.cache_dir
    assert "its float layers run in BF16" in caplog.text and "--precision fp32" in caplog.text
    convs = _conv_precisions(vino, (1, 3, 32, 32))
    assert convs & {"i8", "u8"}, convs  # the Q/DQ part still runs int8 kernels


def test_cache_dir_is_keyed_by_sha256_and_options(tmp_path, cache):
    path = make_channel_model(tmp_path / "m.onnx", ("labels",))
    first = OpenVinoBackend(path, cache_root=cache)
    first.run(_batch())
    assert first.cache_dir.parent == cache
    from fcn_deploy.core.atomic import sha256_file

    assert first.cache_dir.name.startswith(sha256_file(path)[:16])
    assert any(first.cache_dir.glob("*.blob"))  # OpenVINO exported the compiled model there
    again = OpenVinoBackend(path, cache_root=cache)
    assert again.cache_dir == first.cache_dir
    assert OpenVinoBackend(path, threads=1, cache_root=cache).cache_dir != first.cache_dir
    other = make_channel_model(tmp_path / "o.onnx", ("labels", "logits"))
    assert OpenVinoBackend(other, cache_root=cache).cache_dir != first.cache_dir
    opts = {"INFERENCE_PRECISION_HINT": "f32"}
    assert cache_dir_for("a" * 64, opts, cache) != cache_dir_for("b" * 64, opts, cache)
    assert cache_dir_for("a" * 64, opts, cache) != cache_dir_for("a" * 64, {"X": "1"}, cache)


def test_unreadable_model_is_a_one_line_error(tmp_path, cache):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(FcnDeployError, match="bad.onnx"):
        OpenVinoBackend(bad, cache_root=cache)


def _four_class_model(path, seed=0, opt_shape=(64, 64)):
    """A torch-free 4-class conv net (3x3 conv -> ReLU -> 1x1 conv -> ArgMax) for the synthetic dataset."""
    from fcn_deploy.core.card import ModelCard, OutputSpec

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) * 0.5).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal((4, 16, 1, 1)) * 0.5).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "four", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", "H", "W"])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    card = ModelCard.default("fcn8s", 4, outputs=(OutputSpec("labels", "labels"),), min_shape=(8, 8),
                             opt_shape=opt_shape, training_dataset="synthetic",
                             class_names=("background", "disc", "box", "triangle"))  # the dataset's  # fmt: skip
    card.attach(model)
    onnx.save(model, str(path))
    return path


def _cli(*args, ok=True):
    from click.testing import CliRunner

    from fcn_deploy.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def test_factory_opens_openvino_for_onnx_only(tmp_path):
    from fcn_deploy.chain.backends import backend_for, open_backend

    path = make_channel_model(tmp_path / "m.onnx")
    assert backend_for(path, "openvino") == "openvino"
    with open_backend(path, "openvino") as net:
        assert isinstance(net, OpenVinoBackend) and net.precision == "fp32"
    with pytest.raises(FcnDeployError, match=r"\.pt file cannot run on --backend openvino"):
        backend_for(tmp_path / "m.pt", "openvino")
    with pytest.raises(FcnDeployError, match="onnxruntime backend does not compute in BF16"):
        open_backend(path, "onnxruntime", precision="bf16")
    with pytest.raises(FcnDeployError, match="CPU only"):
        open_backend(path, "openvino", device="cuda")
    if bf16_refusal() is None:
        with open_backend(path, "auto", precision="bf16") as net:
            assert net.name == "openvino" and net.precision == "bf16"
            net.run(_batch())
            assert net.cache_dir.parent == tmp_path / "home-cache"


def test_evaluate_and_profile_on_openvino(tmp_path):
    import json

    path = _four_class_model(tmp_path / "four.onnx")
    args = ("evaluate", path, "--dataset", "synthetic", "--split", "val", "--resize", "48x48", "--json")
    ort = json.loads(_cli(*args, "--backend", "onnxruntime"))
    vino = json.loads(_cli(*args, "--backend", "openvino"))
    assert vino["num_images"] == ort["num_images"] > 0
    assert vino == ort  # FP32 is exact: the same labels, the same metrics
    assert "openvino" in _cli(*args[:-1], "--backend", "openvino")
    out = _cli(*args, "--backend", "onnxruntime", "--precision", "bf16", ok=False)
    assert "does not compute in BF16" in out and "Traceback" not in out
    prof = json.loads(_cli("profile", path, "--backend", "openvino", "--shape", "32x32", "--iterations", "5",
                           "--warmup-s", "0", "--json", "-"))  # fmt: skip
    assert prof["backend"]["backend"] == "openvino"


def test_report_has_openvino_rows_beside_onnx_runtime(tmp_path):
    from fcn_deploy.report.inputs import ReportConfig
    from fcn_deploy.report.run import build_report

    path = _four_class_model(tmp_path / "four.onnx", opt_shape=(32, 32))
    cfg = ReportConfig(output=tmp_path / "report", dataset="synthetic", onnx=path, max_images=4,
                       precisions=("fp32", "int8", "bf16"), backends=("onnxruntime", "openvino"), calib_images=4,
                       latency_warmup_s=0.0, latency_duration_s=0.0, latency_iterations=3, num_samples=1)  # fmt: skip
    rows = {(r["backend"], r["precision"]): r for r in build_report(cfg, echo=lambda _: None).rows}
    assert set(rows) == {(b, p) for b in ("onnxruntime", "openvino") for p in ("fp32", "int8", "bf16")}
    ort, vino = rows[("onnxruntime", "fp32")], rows[("openvino", "fp32")]
    assert vino["status"] == "ok" and vino["agreement_with_fp32"] == 1.0
    assert vino["mean_iou"] == ort["mean_iou"]
    int8 = rows[("openvino", "int8")]
    assert int8["status"] == "ok" and int8["model"].endswith("model.int8.onnx")  # the ORT Q/DQ flavour, OpenVINO's fastest
    assert rows[("onnxruntime", "bf16")]["status"] == "skipped"
    assert "does not compute in BF16" in rows[("onnxruntime", "bf16")]["reason"]
    bf16 = rows[("openvino", "bf16")]
    if bf16_refusal() is None:
        assert bf16["status"] == "ok" and bf16["agreement_with_fp32"] > 0.9
    else:
        assert bf16["status"] == "skipped" and bf16_refusal() in bf16["reason"]
    assert "| openvino | bf16 |" in (tmp_path / "report" / "report.md").read_text()


def _lowered_copy(path, out, precision, target):
    """The same graph with a card that says it was lowered (what `quantize` records)."""
    from fcn_deploy.core.card import ModelCard

    model = onnx.load(str(path))
    card = ModelCard.from_onnx(model)
    card.replace(
        precision=precision, provenance={"lowering": {"precision": precision, "target": target}}
    ).attach(model)
    onnx.save(model, str(out))
    return out


def test_auto_on_the_cpu_follows_the_measured_rule(tmp_path):
    from fcn_deploy.runtime.cpu_auto import choose_cpu_backend, graph_precision, read_metadata

    fp32 = make_channel_model(tmp_path / "m.onnx", heavy_layers=1)
    trt = _lowered_copy(_qdq_model(tmp_path / "q.onnx"), tmp_path / "q.trt.onnx", "int8", "tensorrt")
    ortq = _lowered_copy(_qdq_model(tmp_path / "q.onnx"), tmp_path / "q.ort.onnx", "int8", "onnxruntime")
    assert graph_precision(fp32) == ("fp32", None) and graph_precision(trt) == ("int8", "tensorrt")
    assert read_metadata(fp32) == {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    assert read_metadata(tmp_path / "junk.onnx") == {}
    amx, avx2 = [FLAGS_AMX], [FLAGS_AVX2]
    assert choose_cpu_backend(fp32, None, amx, openvino=True)[0] == "onnxruntime"
    assert choose_cpu_backend(fp32, "bf16", amx, openvino=True)[0] == "openvino"
    assert choose_cpu_backend(trt, None, amx, openvino=True)[0] == "openvino"
    # no VNNI/AMX: still OpenVINO (measured 0.48x vs ONNX Runtime's 1.13x of FP32 on the AVX2 EPYC)
    assert choose_cpu_backend(trt, None, avx2, openvino=True) == (
        "openvino", "INT8 (tensorrt) graph on an AVX2 CPU: OpenVINO is faster")
    assert choose_cpu_backend(trt, None, amx, openvino=False) == ("onnxruntime", "OpenVINO is not installed")
    # the ONNX Runtime flavour too (measured 0.17x vs ONNX Runtime's 0.48x of FP32 on AMX, 0.49x vs 0.59x on AVX2)
    assert choose_cpu_backend(ortq, None, amx, openvino=True) == (
        "openvino", "INT8 (onnxruntime) graph on a CPU with avx512_vnni/amx_int8: OpenVINO is faster")
    assert choose_cpu_backend(ortq, None, amx, openvino=False)[0] == "onnxruntime"


def test_auto_says_which_runtime_it_picked(tmp_path, caplog):
    import logging

    from fcn_deploy.chain.backends import open_backend

    trt = _lowered_copy(_qdq_model(tmp_path / "q.onnx"), tmp_path / "q.trt.onnx", "int8", "tensorrt")
    with caplog.at_level(logging.DEBUG, logger="fcn_deploy.backends"):
        net = open_backend(trt, "auto", "cpu")
    assert f"--backend auto: {net.name} for q.trt.onnx" in caplog.text
    assert net.name == "openvino"  # a TensorRT-flavour INT8 graph, on any CPU (the measured rule)
    assert open_backend(trt, "onnxruntime").name == "onnxruntime"  # a named backend is never overridden


def test_outputs_equal_a_bare_compiled_model_and_outlive_the_next_run(tmp_path, cache):
    from fcn_deploy.runtime.openvino_backend import compile_options

    path = make_channel_model(tmp_path / "m.onnx", ("labels", "logits"), heavy_layers=3)
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({"image": ov.PartialShape([1, 3, 24, 40])})
    request = core.compile_model(model, "CPU", compile_options("fp32", None)).create_infer_request()
    vino = OpenVinoBackend(path, cache_root=cache)
    first, second = _batch(seed=1), _batch(seed=2)
    bare = request.infer({"image": first})
    out = vino.run(first)
    np.testing.assert_array_equal(out["labels"], bare["labels"])
    np.testing.assert_array_equal(out["logits"], bare["logits"])
    kept = {k: v.copy() for k, v in out.items()}
    again = vino.run(second)  # the request's output tensors are reused: what we returned must not change
    for k in kept:
        np.testing.assert_array_equal(out[k], kept[k])
    assert not np.array_equal(again["logits"], out["logits"])
