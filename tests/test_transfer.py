"""VGG16 transfer from torchvision's layout and staged 32s -> 16s -> 8s initialisation."""

from __future__ import annotations

import pickle

import pytest
import torch

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.model_config import ModelConfig
from fcn_deploy.training.fcn import build_model
from fcn_deploy.training.transfer import init_from, transfer_vgg16
from fcn_deploy.training.weights_io import torch_load

TV_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
            (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]


def fake_vgg16_state(fc: int = 4096) -> dict[str, torch.Tensor]:
    """torchvision vgg16 layout at full size, with values that show where each tensor landed."""
    state = {}
    for i, (idx, cin, cout) in enumerate(TV_CONVS):
        state[f"features.{idx}.weight"] = torch.full((cout, cin, 3, 3), float(i + 1))
        state[f"features.{idx}.bias"] = torch.full((cout,), -float(i + 1))
    state["classifier.0.weight"] = torch.arange(fc * 25088, dtype=torch.float32).reshape(fc, 25088)
    state["classifier.0.bias"] = torch.zeros(fc)
    state["classifier.3.weight"] = torch.eye(fc)
    state["classifier.3.bias"] = torch.ones(fc)
    state["classifier.6.weight"] = torch.zeros(1000, fc)
    state["classifier.6.bias"] = torch.zeros(1000)
    return state


@pytest.fixture(scope="module")
def vgg_state() -> dict[str, torch.Tensor]:
    return fake_vgg16_state()


def test_transfer_copies_every_layer(vgg_state: dict) -> None:
    model = build_model(ModelConfig("fcn32s", num_classes=2))
    transfer_vgg16(model, vgg_state)
    assert torch.all(model.conv1_1.weight == 1) and torch.all(model.conv5_3.bias == -13)
    # fc6: (4096, 25088) reshaped to (4096, 512, 7, 7) in torchvision's C, H, W flatten order.
    assert model.fc6.weight[0, 0, 0, 1] == 1 and model.fc6.weight[0, 1, 0, 0] == 49 and model.fc6.weight[1, 0, 0, 0] == 25088
    assert torch.equal(model.fc7.weight[:, :, 0, 0], torch.eye(4096))
    assert model.score_fr.weight.abs().sum() == 0  # fc8 is dropped, scorer stays zero


def test_transfer_rejects_missing_and_misshapen_keys(vgg_state: dict) -> None:
    model = build_model(ModelConfig("fcn32s", num_classes=2))
    broken = dict(vgg_state)
    del broken["features.10.weight"]
    with pytest.raises(FcnDeployError, match="missing keys features.10.weight"):
        transfer_vgg16(model, broken)
    narrow = build_model(ModelConfig("fcn32s", num_classes=2, width=0.5))
    with pytest.raises(FcnDeployError, match=r"features.0.weight has shape \(64, 3, 3, 3\)"):
        transfer_vgg16(narrow, vgg_state)


def test_torch_load_refuses_bad_files(tmp_path) -> None:
    with pytest.raises(FcnDeployError, match="no such file"):
        torch_load(tmp_path / "missing.pth")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(FcnDeployError, match="empty"):
        torch_load(empty)
    good = tmp_path / "good.pth"
    torch.save({"a": torch.ones(1000)}, good)
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(FcnDeployError, match="corrupt or truncated"):
        torch_load(truncated)
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"\x08\x07\x12\x07pytorch")  # an ONNX protobuf given where a checkpoint belongs
    with pytest.raises(FcnDeployError, match="not a PyTorch weights file"):
        torch_load(onnx_file)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, evil, _use_new_zipfile_serialization=True, pickle_module=pickle)
    with pytest.raises(FcnDeployError, match="refused to load: it needs"):
        torch_load(evil)
    assert not marker.exists()


def test_staged_init_copies_trunk_and_keeps_new_scorers_zero() -> None:
    torch.manual_seed(0)
    fcn32 = build_model(ModelConfig("fcn32s", num_classes=3, width=0.125))
    torch.nn.init.normal_(fcn32.score_fr.weight)
    fcn16 = build_model(ModelConfig("fcn16s", num_classes=3, width=0.125))
    copied = init_from(fcn16, fcn32.state_dict(), "fcn32s")
    assert "score_fr.weight" in copied and "conv3_2.weight" in copied
    assert torch.equal(fcn16.score_fr.weight, fcn32.score_fr.weight)
    assert fcn16.score_pool4.weight.abs().sum() == 0
    fcn8 = build_model(ModelConfig("fcn8s", num_classes=3, width=0.125))
    init_from(fcn8, fcn16.state_dict(), "fcn16s")
    assert torch.equal(fcn8.conv1_1.weight, fcn32.conv1_1.weight)


def test_staged_init_refuses_wrong_variant_and_shapes() -> None:
    fcn8 = build_model(ModelConfig("fcn8s", num_classes=3, width=0.125))
    fcn32 = build_model(ModelConfig("fcn32s", num_classes=3, width=0.125))
    with pytest.raises(FcnDeployError, match="takes a checkpoint of fcn8s, fcn16s"):
        init_from(fcn8, fcn32.state_dict(), "fcn32s")
    wide = build_model(ModelConfig("fcn16s", num_classes=3, width=0.25))
    with pytest.raises(FcnDeployError, match="width, padding, batch norm and classes must match"):
        init_from(fcn8, wide.state_dict(), "fcn16s")
