"""Profile shapes, batch and workspace parsing, and checks against the exported graph: all before any GPU work."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.shapes import DEFAULT_SHAPES
from fcn_deploy.engine.profile_shapes import (
    Profile,
    check_against_onnx,
    onnx_input_dims,
    parse_batch,
    parse_workspace,
    profile_from_card,
    validate,
)


def card(**kw) -> ModelCard:
    return ModelCard.default("fcn8s", 3, **kw)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2G", 2 * 1024**3),
        ("512M", 512 * 1024**2),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("4096k", 4 * 1024**2),
        ("1073741824", 1024**3),
        (" 1 g ", 1024**3),
    ],
)
def test_parse_workspace(text, expected):
    assert parse_workspace(text) == expected


@pytest.mark.parametrize("text", ["", "2X", "-1G", "G", "2 G B B", "100"])
def test_parse_workspace_rejects(text):
    with pytest.raises(FcnDeployError, match="--workspace"):
        parse_workspace(text)


@pytest.mark.parametrize("text,expected", [("1:4:8", (1, 4, 8)), ("4", (4, 4, 4)), ("2:2:2", (2, 2, 2))])
def test_parse_batch(text, expected):
    assert parse_batch(text) == expected


@pytest.mark.parametrize("text", ["0:1:2", "4:2:8", "1:2", "a:b:c", "1:2:3:4", ""])
def test_parse_batch_rejects(text):
    with pytest.raises(FcnDeployError, match="--batch"):
        parse_batch(text)


def test_profile_defaults_come_from_the_model_card():
    p = profile_from_card(
        card(min_shape=(64, 96), opt_shape=(360, 480), max_shape=(720, 960), input_name="img")
    )
    assert p.input_name == "img"
    assert p.shapes() == ((1, 3, 64, 96), (1, 3, 360, 480), (1, 3, 720, 960))


def test_profile_defaults_are_the_one_shape_range():
    assert profile_from_card(card()).sizes == DEFAULT_SHAPES == card().shapes


def test_options_override_one_shape_each():
    p = profile_from_card(card(), max_shape="720x960", batch="1:2:4")
    c = card()
    assert p.min_hw == c.min_shape and p.opt_hw == c.opt_shape and p.max_hw == (720, 960)
    assert p.shapes()[2] == (4, 3, 720, 960)


@pytest.mark.parametrize(
    "kw,axis",
    [
        (dict(min_shape="400x480", opt_shape="360x480"), "height"),
        (dict(opt_shape="360x2000", max_shape="720x960"), "width"),
    ],
)
def test_min_opt_max_order_is_enforced(kw, axis):
    with pytest.raises(FcnDeployError, match=f"profile {axis}s .*min <= opt <= max"):
        profile_from_card(card(), **kw)


def test_bad_size_strings_are_user_errors():
    with pytest.raises(FcnDeployError, match="--opt-shape"):
        profile_from_card(card(), opt_shape="360by480")


def test_multiple_rule():
    p = Profile("image", (1, 1, 1), (32, 32), (360, 480), (720, 960))
    assert validate(p, multiple=8) is p
    with pytest.raises(FcnDeployError, match="multiples of 32"):
        validate(p, multiple=32)  # 360 is not a multiple of 32


def test_check_input_inside_and_outside_profile():
    p = Profile("image", (1, 2, 4), (32, 32), (360, 480), (720, 960))
    p.check_input((4, 3, 32, 960))
    with pytest.raises(FcnDeployError, match="outside the engine's profile"):
        p.check_input((1, 3, 1080, 1920))
    with pytest.raises(FcnDeployError, match="outside the engine's profile"):
        p.check_input((5, 3, 64, 64))
    with pytest.raises(FcnDeployError, match="NCHW"):
        p.check_input((1, 64, 64, 3))


def test_profile_dict_round_trip():
    p = Profile("image", (1, 2, 4), (32, 32), (360, 480), (720, 960))
    assert Profile.from_dict(p.to_dict()) == p


def graph_with_input(dims) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, dims)
    return helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "g", [x], [y])
    )


def test_onnx_dims_and_static_axes():
    dynamic = graph_with_input(["N", 3, "H", "W"])
    assert onnx_input_dims(dynamic, "image") == ["N", 3, "H", "W"]
    p = profile_from_card(card(), batch="1:2:4")
    check_against_onnx(p, onnx_input_dims(dynamic, "image"), "m.onnx")

    static = graph_with_input([1, 3, 360, 480])
    with pytest.raises(FcnDeployError, match="axis 0 is fixed at 1"):
        check_against_onnx(p, onnx_input_dims(static, "image"), "m.onnx")
    fixed = profile_from_card(card(), min_shape="360x480", opt_shape="360x480", max_shape="360x480")
    check_against_onnx(fixed, onnx_input_dims(static, "image"), "m.onnx")
    with pytest.raises(FcnDeployError, match="axis 2 is fixed at 360"):
        check_against_onnx(profile_from_card(card()), onnx_input_dims(static, "image"), "m.onnx")
    with pytest.raises(FcnDeployError, match="no input 'pixels'"):
        onnx_input_dims(static, "pixels")
    with pytest.raises(FcnDeployError, match="4 channels"):
        check_against_onnx(fixed, [1, 4, 360, 480], "m.onnx")
