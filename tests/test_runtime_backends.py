"""Backends on real ONNX Runtime sessions (and one PyTorch checkpoint); factory choice by file type."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from test_runtime_helpers import channel_card, colour_image, make_channel_model

from fcn_deploy.chain.backends import backend_for, open_backend
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.preprocess import preprocess
from fcn_deploy.runtime.ort_backend import OrtBackend


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
