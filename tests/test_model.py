"""The FCN family is exact to the paper: counts, offsets, bilinear kernels, size and alignment for every H, W."""

from __future__ import annotations

import pytest
import torch

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.model_config import ModelConfig
from fcn_deploy.training.fcn import bilinear_kernel, build_model, count_macs
from fcn_deploy.training.geometry import derived_offsets

VARIANTS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")
SIZES = [(1, 1), (1, 7), (2, 3), (17, 31), (31, 17), (97, 131), (64, 64), (33, 47), (360, 480), (500, 500)]


@pytest.mark.parametrize(
    ("variant", "learned", "total"),
    [
        ("fcn32s", 134_346_581, 136_152_917),
        ("fcn16s", 134_357_354, 134_815_994),
        ("fcn8s", 134_362_751, 134_489_759),
        ("fcn8s-atonce", 134_362_751, 134_489_759),
    ],
)
def test_paper_parameter_counts(variant: str, learned: int, total: int) -> None:
    counts = build_model(ModelConfig(variant=variant, num_classes=21)).parameter_counts()
    assert counts == {"params_learned": learned, "params_total": total}


def test_learned_upsampling_counts_the_kernels() -> None:
    counts = build_model(ModelConfig(variant="fcn8s", learn_upsampling=True)).parameter_counts()
    assert counts["params_learned"] == counts["params_total"] == 134_489_759


@pytest.mark.parametrize(
    ("variant", "offsets"),
    [
        ("fcn32s", {"final": 19}),
        ("fcn16s", {"score_pool4": 5, "final": 27}),
        ("fcn8s", {"score_pool4": 5, "score_pool3": 9, "final": 31}),
        ("fcn8s-atonce", {"score_pool4": 5, "score_pool3": 9, "final": 31}),
    ],
)
def test_paper_crop_offsets(variant: str, offsets: dict) -> None:
    assert build_model(ModelConfig(variant=variant, width=0.125)).crop_offsets == offsets


@pytest.mark.parametrize("padding", ["paper", "same"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_offsets_follow_from_layer_geometry(variant: str, padding: str) -> None:
    """Caffe's coord_map walked over the real modules reproduces every offset the forward pass uses."""
    model = build_model(ModelConfig(variant=variant, width=0.125, padding=padding, batch_norm=True))
    derived = derived_offsets(model)
    assert all(v.denominator == 1 and v >= 0 for v in derived.values())
    assert {k: int(v) for k, v in derived.items()} == model.crop_offsets


def test_upsampling_layers_per_variant() -> None:
    def kinds(v: str) -> list[tuple[int, int]]:
        return [(m.kernel_size[0], m.stride[0]) for _, m in build_model(ModelConfig(v, width=0.125)).upsamplers()]

    assert kinds("fcn32s") == [(64, 32)]
    assert kinds("fcn16s") == [(4, 2), (32, 16)]
    assert kinds("fcn8s") == [(4, 2), (4, 2), (16, 8)]


def test_bilinear_kernel_taps_and_diagonal() -> None:
    w = bilinear_kernel(3, 4)
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(w[1, 1], taps[:, None] * taps[None, :])
    assert w[0, 1].abs().sum() == 0 and w[2, 0].abs().sum() == 0
    model = build_model(ModelConfig("fcn8s", num_classes=3, width=0.125))
    for _, deconv in model.upsamplers():
        assert not deconv.weight.requires_grad
        torch.testing.assert_close(deconv.weight, bilinear_kernel(3, deconv.kernel_size[0]))
    learned = build_model(ModelConfig("fcn8s", num_classes=3, width=0.125, learn_upsampling=True))
    assert all(d.weight.requires_grad for _, d in learned.upsamplers())


def test_score_layers_start_at_zero() -> None:
    model = build_model(ModelConfig("fcn8s", width=0.125))
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert getattr(model, name).weight.abs().sum() == 0
        assert getattr(model, name).bias.abs().sum() == 0


@pytest.mark.parametrize("padding", ["paper", "same"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_output_size_equals_input_size(variant: str, padding: str) -> None:
    model = build_model(ModelConfig(variant=variant, num_classes=3, width=1 / 32, padding=padding)).eval()
    with torch.no_grad():
        for h, w in SIZES:
            assert model(torch.zeros(1, 3, h, w)).shape == (1, 3, h, w), (h, w)


def _flip_symmetric(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.normal_(m.weight, std=0.3)
                w = m.weight.clone()
                m.weight.copy_((w + w.flip(2) + w.flip(3) + w.flip(2, 3)) / 4)
                torch.nn.init.normal_(m.bias, std=0.1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_padding_commutes_with_flips(variant: str) -> None:
    """With flip-symmetric kernels, an aligned net commutes with flips (sides multiples of 32)."""
    model = build_model(ModelConfig(variant=variant, num_classes=3, width=0.125, padding="same")).eval().double()
    _flip_symmetric(model)
    x = torch.randn(1, 3, 64, 96, dtype=torch.double)
    with torch.no_grad():
        y = model(x)
        for dims in ((2,), (3,)):
            torch.testing.assert_close(model(x.flip(dims)), y.flip(dims), rtol=1e-9, atol=1e-9 * y.abs().max().item())


def test_misaligned_crop_breaks_flip_symmetry() -> None:
    """The symmetry test can fail: shifting the final crop by one pixel is caught."""
    model = build_model(ModelConfig("fcn32s", num_classes=3, width=0.125, padding="same")).eval().double()
    _flip_symmetric(model)
    model.upscore.padding = (15, 15)  # one less than (64 - 32) / 2: output shifted by one pixel
    x = torch.randn(1, 3, 64, 96, dtype=torch.double)
    with torch.no_grad():
        y = model(x)
        assert not torch.allclose(model(x.flip(3)), y.flip(3))


def test_at_once_scales_fold_exactly() -> None:
    model = build_model(ModelConfig("fcn8s-atonce", num_classes=3, width=0.125)).eval().double()
    torch.manual_seed(1)
    with torch.no_grad():
        for name in ("score_fr", "score_pool4", "score_pool3"):
            torch.nn.init.normal_(getattr(model, name).weight)
        x = torch.randn(1, 3, 40, 56, dtype=torch.double)
        before = model(x)
        model.fold_skip_scales()
        assert model.skip_scales == {"pool4": 1.0, "pool3": 1.0}
        torch.testing.assert_close(model(x), before)


def test_same_padding_costs_less() -> None:
    paper, _ = count_macs(build_model(ModelConfig("fcn8s", width=0.25)), (360, 480))
    same, out = count_macs(build_model(ModelConfig("fcn8s", width=0.25, padding="same")), (360, 480))
    assert out == (360, 480)
    assert paper / same > 1.5


def test_paper_macs_match_reference() -> None:
    """fcn.md 1.3: FCN-8s (dense deconvs counted) at 360x480 = 139.8 G multiply-adds."""
    macs, _ = count_macs(build_model(ModelConfig("fcn8s")), (360, 480))
    assert round(macs / 1e9, 1) == 139.8


def test_batch_norm_option_adds_bn_layers() -> None:
    model = build_model(ModelConfig("fcn8s", width=0.125, batch_norm=True))
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 13


@pytest.mark.parametrize(
    "kwargs", [{"variant": "fcn4s"}, {"padding": "valid"}, {"num_classes": 0}, {"width": 0.0}]
)
def test_bad_config_is_a_user_error(kwargs: dict) -> None:
    with pytest.raises(FcnDeployError):
        ModelConfig(**kwargs)
