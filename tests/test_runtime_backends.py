"""Backends on real ONNX Runtime sessions (and one PyTorch checkpoint); factory choice by file type."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from test_runtime_helpers import channel_card, colour_image, make_channel_model

from fcn_deploy.chain.backends import backend_for, open_backend
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.preprocess import preprocess
from fcn_deploy.runtime.ort_backend import SESSION_CONFIG, OrtBackend


def _batch(seed: int = 0):
    image, labels = colour_image(24, 30, seed)
    return preprocess(image, channel_card(("labels",)).normalization), labels


@pytest.mark.parametrize("outputs", [("labels", "logits"), ("labels",), ("probs",), ("logits",)])
def test_ort_backend_labels_match_the_colour_channel(tmp_path, outputs):
    backend = open_backend(make_channel_model(tmp_path / "m.onnx", outputs))
    assert isinstance(backend, OrtBackend) and backend.session is not None
    batch, want = _batch(1)
    out = backend.run(batch)
    assert out["labels"].shape == (1, 24, 30)
    np.testing.assert_array_equal(
        out["labels"][0], want
    )  # argmax happens here when the model gives scores only
    for kind in ("logits", "probs"):
        assert (kind in out) == (kind in outputs)
    if "probs" in out:
        np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, rtol=1e-5)
    assert backend.describe()["providers"] == ["CPUExecutionProvider"]
    backend.close()


def test_card_and_graph_mismatch_and_missing_card(tmp_path):
    with pytest.raises(FcnDeployError, match="no fcn-deploy model card"):
        OrtBackend(make_channel_model(tmp_path / "nocard.onnx", card=False))
    path = make_channel_model(tmp_path / "m.onnx", ("labels",))
    model = onnx.load(str(path))
    channel_card(("labels",)).replace(input_name="pixels").attach(model)
    onnx.save(model, str(path))
    with pytest.raises(FcnDeployError, match="input 'pixels'"):
        OrtBackend(path)


def _static_copy(path, hw):
    """The same graph with its input H and W fixed at `hw` (a --static export)."""
    model = onnx.load(str(path))
    for axis, value in zip((2, 3), hw, strict=True):
        dim = model.graph.input[0].type.tensor_type.shape.dim[axis]
        dim.ClearField("dim_param")
        dim.dim_value = value
    out = path.with_name("static.onnx")
    onnx.save(model, str(out))
    return out


def test_ort_backend_declares_its_capabilities(tmp_path):
    path = make_channel_model(tmp_path / "m.onnx", ("labels", "logits"))
    dynamic = OrtBackend(path)
    assert dynamic.input_sizes == dynamic.card.shapes and dynamic.input_sizes.fixed is None
    assert dynamic.output_kinds == ("logits",)
    assert not dynamic.device_timing and dynamic.last_device_ms is None and not dynamic.per_layer
    batch, want = _batch(0)
    with pytest.raises(FcnDeployError, match="per-layer"):
        dynamic.layer_times(batch, 1)
    assert OrtBackend(make_channel_model(tmp_path / "l.onnx", ("labels",))).output_kinds == ()
    assert OrtBackend(make_channel_model(tmp_path / "p.onnx", ("probs",))).output_kinds == ("probs",)

    static = OrtBackend(_static_copy(path, (24, 30)))
    assert static.input_sizes.fixed == (24, 30) and static.describe()["fixed_hw"] == (24, 30)
    assert not static.input_sizes.contains((24, 32))
    np.testing.assert_array_equal(static.run(batch)["labels"][0], want)


def test_ort_backend_from_bytes_with_a_given_card(tmp_path):
    bare = make_channel_model(tmp_path / "bare.onnx", ("labels", "logits"), card=False)
    backend = OrtBackend(bare.read_bytes(), card=channel_card(("labels", "logits")))
    batch, want = _batch(2)
    np.testing.assert_array_equal(backend.run(batch)["labels"][0], want)
    assert backend.describe()["model"] == "in memory" and backend.output_kinds == ("logits",)
    with pytest.raises(FcnDeployError, match="in-memory ONNX model: has no fcn-deploy model card"):
        OrtBackend(bare.read_bytes())


def test_cuda_without_gpu_provider_is_a_missing_dependency(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(MissingDependencyError, match="onnxruntime-gpu"):
        OrtBackend(make_channel_model(tmp_path / "m.onnx"), device="cuda")


def test_factory_choice_and_errors(tmp_path):
    assert backend_for(tmp_path / "a.onnx") == "onnxruntime"
    assert backend_for(tmp_path / "a.engine") == "tensorrt"
    assert backend_for(tmp_path / "a.plan") == "tensorrt"
    assert backend_for(tmp_path / "a.pth") == "torch"
    with pytest.raises(FcnDeployError, match="unknown model type"):
        backend_for(tmp_path / "a.bin")
    with pytest.raises(FcnDeployError, match="cannot run on --backend torch"):
        backend_for(tmp_path / "a.onnx", "torch")
    with pytest.raises(FcnDeployError, match="no such model file"):
        open_backend(tmp_path / "missing.onnx")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(FcnDeployError, match="GPU only"):
        open_backend(engine, device="cpu")


def test_torch_backend_runs_a_training_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    from fcn_deploy.core.card import ModelCard
    from fcn_deploy.core.model_config import ModelConfig
    from fcn_deploy.training.checkpoint import save_checkpoint
    from fcn_deploy.training.fcn import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig("fcn32s", 3, width=0.0625, padding="same"))
    save_checkpoint(tmp_path / "m.pt", model, ModelCard.default("fcn32s", 3, width=0.0625, padding="same"))
    backend = open_backend(tmp_path / "m.pt")
    assert backend.name == "torch"
    batch = np.random.default_rng(0).standard_normal((1, 3, 32, 40)).astype(np.float32)
    out = backend.run(batch)
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(out["logits"], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["labels"], want.argmax(1))
    assert backend.output_kinds == ("logits",) and backend.input_sizes == backend.card.shapes
    assert not backend.per_layer and not backend.device_timing


def test_torch_backend_wraps_a_live_module():
    torch = pytest.importorskip("torch")
    from fcn_deploy.core.card import ModelCard
    from fcn_deploy.core.model_config import ModelConfig
    from fcn_deploy.training.backend import TorchBackend
    from fcn_deploy.training.fcn import build_model

    torch.manual_seed(0)
    config = ModelConfig("fcn32s", 3, width=0.0625, padding="same")
    model = build_model(config).eval()
    backend = TorchBackend(model, ModelCard.from_config(config), "cpu")
    batch = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(backend.run(batch)["logits"], want, rtol=1e-4, atol=1e-5)
    assert backend.describe() == {"backend": "torch", "model": "in memory", "device": "cpu"}


def test_session_spins_inside_a_run_and_stops_when_it_returns(tmp_path):
    backend = OrtBackend(make_channel_model(tmp_path / "m.onnx"), threads=2)
    opts = backend.session.get_session_options()
    assert SESSION_CONFIG == {
        "session.intra_op.allow_spinning": "1",
        "session.intra_op.spin_duration_us": "100",
        "session.force_spinning_stop": "1",
    }
    for key, value in SESSION_CONFIG.items():
        assert opts.get_session_config_entry(key) == value
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1


def test_outputs_equal_a_bare_session_bit_for_bit(tmp_path):
    import onnxruntime as ort

    path = make_channel_model(tmp_path / "m.onnx", ("labels", "logits"), heavy_layers=3)
    bare = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = OrtBackend(path)
    batch = np.random.default_rng(3).random((2, 3, 40, 56), dtype=np.float32)
    labels, logits = bare.run(["labels", "logits"], {"image": batch})
    out = ours.run(batch)
    np.testing.assert_array_equal(out["labels"], labels)
    np.testing.assert_array_equal(out["logits"], logits)
    # A float64 or strided batch is cast / made contiguous once, to the same result.
    np.testing.assert_array_equal(ours.run(batch.astype(np.float64))["logits"], logits)
    wide = np.zeros((2, 3, 40, 112), np.float32)
    wide[..., ::2] = batch
    np.testing.assert_array_equal(ours.run(wide[..., ::2])["logits"], logits)


def _float_conv_pool_then_int8() -> bytes:
    """conv (FP32) -> relu -> maxpool -> Q/DQ -> conv: the border an --auto plan leaves after a group kept in FP32."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (16, 3, 3, 3)), ("w2", (16, 16, 3, 3)))]  # fmt: skip
    inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.uint8(0), "z")]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("QuantizeLinear", ["p1", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq"),
        helper.make_node("Conv", ["dq", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "border", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_sessions_keep_the_pool_before_an_int8_border_in_float(tmp_path):
    """ONNX Runtime's QDQ propagation would move the Q before the MaxPool (a slow uint8 NCHW pool); our sessions
    disable it (ort_backend.DISABLED_OPTIMIZERS). Read off the graph ONNX Runtime optimised."""
    import onnxruntime as ort

    from fcn_deploy.runtime.ort_backend import cpu_session_options, inference_session

    data = _float_conv_pool_then_int8()

    def pool_input_producer(session_of) -> str:
        opts = cpu_session_options(1)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # no layout rewrite
        opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
        session_of(opts)
        g = onnx.load(str(tmp_path / "opt.onnx")).graph
        producer = {o: n.op_type for n in g.node for o in n.output}
        pool = next(n for n in g.node if n.op_type == "MaxPool")
        return producer[pool.input[0]]

    cpu = ["CPUExecutionProvider"]
    assert pool_input_producer(lambda o: ort.InferenceSession(data, o, providers=cpu)) == "QuantizeLinear"
    assert pool_input_producer(lambda o: inference_session(data, o, cpu)) != "QuantizeLinear"
