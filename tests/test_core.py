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
from fcn_deploy.core.model_config import ModelConfig
from fcn_deploy.core.preprocess import denormalize, normalize, preprocess, resize_labels, to_rgb
from fcn_deploy.core.shapes import DEFAULT_SHAPES, ShapeRange, parse_hw, parse_hw_list


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


def test_shape_range_is_validated_and_has_one_set_of_defaults() -> None:
    assert DEFAULT_SHAPES == ShapeRange((32, 32), (360, 480), (1088, 1920))
    assert ShapeRange([8, 8], (np.int64(16), 16), (32, 32)).opt_hw == (16, 16)  # plain int tuples
    with pytest.raises(FcnDeployError, match="heights min 40, opt 32, max 64: need min <= opt <= max"):
        ShapeRange((40, 40), (32, 32), (64, 64))
    with pytest.raises(FcnDeployError, match="widths"):
        ShapeRange((8, 8), (16, 70), (32, 64))
    for bad in (((0, 8), (8, 8), (8, 8)), ((8, 8.5), (8, 8), (9, 9)), ((8,), (8, 8), (8, 8))):
        with pytest.raises(FcnDeployError):
            ShapeRange(*bad)
    fixed = ShapeRange((40, 56), (40, 56), (40, 56))
    assert fixed.fixed == (40, 56) and DEFAULT_SHAPES.fixed is None
    assert DEFAULT_SHAPES.contains((1080, 1920)) and not DEFAULT_SHAPES.contains((1089, 1920))
    DEFAULT_SHAPES.check((1080, 1920), "m.onnx")
    with pytest.raises(FcnDeployError, match="m.onnx: input 16x16 is outside the model's range 32x32 .. 1088x1920"):
        DEFAULT_SHAPES.check((16, 16), "m.onnx")
    # Widened to contain an opt outside the defaults; the max is rounded up to the stride 32.
    assert DEFAULT_SHAPES.around((24, 2000)) == ShapeRange((24, 32), (24, 2000), (1088, 2016))
    assert DEFAULT_SHAPES.around((48, 64)) == ShapeRange((32, 32), (48, 64), (1088, 1920))


def test_model_card_is_the_model_config_plus_deployment_fields() -> None:
    config = ModelConfig("fcn16s", 4, 0.25, "same", batch_norm=True, learn_upsampling=True)
    card = ModelCard.from_config(config, opt_shape=(24, 32))
    assert card.config == config and card.variant == "fcn16s" and card.learn_upsampling
    assert card.class_names == ("class_0", "class_1", "class_2", "class_3")
    # min and max left out: the one default range, widened to contain opt.
    assert card.shapes == DEFAULT_SHAPES.around((24, 32)) and card.min_shape == (24, 32)
    assert ModelCard.default("fcn8s", 2).shapes == DEFAULT_SHAPES
    with pytest.raises(FcnDeployError, match="need min <= opt <= max"):
        ModelCard.default("fcn8s", 2, min_shape=(400, 480))
    with pytest.raises(FcnDeployError, match="unknown padding"):
        ModelCard.default("fcn8s", 2, padding="valid")
    narrowed = card.with_shapes(ShapeRange((16, 16), (24, 32), (64, 64)))
    assert (narrowed.min_shape, narrowed.opt_shape, narrowed.max_shape) == ((16, 16), (24, 32), (64, 64))


def test_model_card_written_before_learn_upsampling_and_shape_defaults_still_loads() -> None:
    old = ModelCard.default("fcn8s", 2).to_dict()
    del old["learn_upsampling"]
    old.update(min_shape=[32, 32], opt_shape=[360, 480], max_shape=[1080, 1920])  # the card's old default max
    card = ModelCard.from_dict(old)
    assert not card.learn_upsampling and card.shapes == ShapeRange((32, 32), (360, 480), (1080, 1920))
    assert ModelCard.from_json(card.to_json()) == card


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


def test_scratch_folders_name_their_pid_and_dead_ones_are_swept(tmp_path, monkeypatch) -> None:
    import subprocess
    import sys

    from fcn_deploy.core.atomic import remove_own_temps, reserve_temp, scratch_dir

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f"fcn-quantize.{int(dead.stdout)}.abc"
    left.mkdir()  # what a SIGKILLed run leaves
    (tmp_path / f"fcn-quantize.{os.getpid()}.live").mkdir()  # a running one's (this process): kept
    (tmp_path / "fcn-quantize.nopid").mkdir()  # not ours to judge: kept
    with scratch_dir("quantize") as work:
        assert work.name.startswith(f"fcn-quantize.{os.getpid()}.") and work.is_dir()
        assert not left.exists()
    assert not work.exists()
    assert sorted(p.name.split(".")[1] for p in tmp_path.iterdir()) == sorted([str(os.getpid()), "nopid"])
    # on SIGINT/SIGTERM the CLI removes what this process reserved and has not published
    fd, tmp = reserve_temp(tmp_path / "out" / "a.onnx")
    os.close(fd)
    assert tmp.exists() and tmp in remove_own_temps() and not tmp.exists()
