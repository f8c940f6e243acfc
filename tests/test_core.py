"""Model card, preprocessing, atomic writes and HxW parsing: the shared core every command stands on."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from fcn_deploy.core.atomic import atomic_write, sha256_file, write_bytes
from fcn_deploy.core.card import ModelCard, Normalization, OutputSpec, voc_palette
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.preprocess import denormalize, normalize, preprocess, resize_labels, to_rgb
from fcn_deploy.core.shapes import parse_hw, parse_hw_list


def tiny_onnx() -> onnx.ModelProto:
    node = helper.make_node("Relu", ["image"], ["logits"])
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    return helper.make_model(graph)


def test_voc_palette_matches_reference() -> None:
    pal = voc_palette(21)
    assert pal[0] == (0, 0, 0) and pal[1] == (128, 0, 0) and pal[15] == (192, 128, 128) and pal[20] == (0, 64, 128)


def test_model_card_round_trips_through_onnx_metadata() -> None:
    card = ModelCard.default(
        "fcn8s", 3, class_names=("sky", "road", "car"), width=0.25, padding="same",
        outputs=(OutputSpec("labels", "labels"), OutputSpec("probs", "probs")), training_resolution=(180, 240),
        provenance={"method": "entropy"},
    )
    model = tiny_onnx()
    card.attach(model)
    card.replace(precision="int8").attach(model)  # replaces, never duplicates
    assert sum(p.key == "fcn_deploy.model_card" for p in model.metadata_props) == 1
    back = ModelCard.from_onnx(onnx.load_from_string(model.SerializeToString()))
    assert back == card.replace(precision="int8")
    assert back.output("probs").name == "probs" and back.output("logits") is None


def test_model_card_errors_are_user_errors() -> None:
    with pytest.raises(FcnDeployError, match="has no fcn-deploy model card"):
        ModelCard.from_onnx(tiny_onnx(), "x.onnx")
    with pytest.raises(FcnDeployError, match="not valid JSON"):
        ModelCard.from_json("{", "x.onnx")
    with pytest.raises(FcnDeployError, match="schema 99"):
        ModelCard.from_dict({**ModelCard.default("fcn8s", 2).to_dict(), "schema_version": 99})
    with pytest.raises(FcnDeployError, match="3 classes but 2 names"):
        ModelCard.default("fcn8s", 3, class_names=("a", "b"))
    with pytest.raises(FcnDeployError, match="kind"):
        OutputSpec("x", "heat")


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=6)))
def test_model_card_parser_only_raises_user_errors(doc) -> None:
    base = ModelCard.default("fcn8s", 2).to_dict()
    for candidate in (doc, {**base, "normalization": doc}, {**base, "palette": doc}, {**base, "outputs": doc}):
        try:
            ModelCard.from_dict(candidate)
        except FcnDeployError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12))
def test_parse_hw_only_raises_user_errors(text: str) -> None:
    try:
        h, w = parse_hw(text)
        assert h > 0 and w > 0
    except FcnDeployError:
        pass


def test_parse_hw_values() -> None:
    assert parse_hw("360x480") == (360, 480)
    assert parse_hw_list("360x480, 180X240") == [(360, 480), (180, 240)]
    for bad in ("0x0", "360", "axb", "-1x5", "1x2x3"):
        with pytest.raises(FcnDeployError):
            parse_hw(bad)


def test_preprocess_imagenet_and_caffe() -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    x = preprocess(rgb, Normalization.preset("imagenet"))
    assert x.shape == (1, 3, 2, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [(1 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, -0.406 / 0.225],
                               rtol=1e-5)
    caffe = normalize(rgb, Normalization.preset("caffe"))
    np.testing.assert_allclose(caffe[:, 0, 0], [0 - 104.00698793, 128 - 116.66876762, 255 - 122.67891434], rtol=1e-6)
    for norm in (Normalization.preset("imagenet"), Normalization.preset("caffe")):
        np.testing.assert_array_equal(denormalize(normalize(rgb, norm), norm), rgb)


def test_to_rgb_and_resizes() -> None:
    assert to_rgb(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    assert to_rgb(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    assert preprocess(np.zeros((10, 20, 3), np.uint8), Normalization.preset("imagenet"), (5, 7)).shape == (1, 3, 5, 7)
    labels = np.array([[0, 1], [2, 3]], np.uint8)
    big = resize_labels(labels, (4, 4))
    assert set(np.unique(big)) == {0, 1, 2, 3} and big[0, 0] == 0 and big[3, 3] == 3


def test_atomic_write_leaves_old_file_on_failure(tmp_path) -> None:
    dst = tmp_path / "model.onnx"
    write_bytes(dst, b"old")
    with pytest.raises(RuntimeError), atomic_write(dst) as f:
        f.write(b"new and half")
        raise RuntimeError("interrupted")
    assert dst.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.onnx"]
    write_bytes(dst, b"new")
    assert dst.read_bytes() == b"new" and len(sha256_file(dst)) == 64


def test_atomic_write_to_unwritable_place_is_a_user_error(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(FcnDeployError, match="cannot write here"):
        write_bytes(tmp_path / "file" / "sub" / "out.onnx", b"x")
    with pytest.raises(FcnDeployError, match="is a directory"):
        write_bytes(tmp_path, b"x")
