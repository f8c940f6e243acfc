"""TrainTransform: crop size, ignore-padding, image/label alignment through scale, crop and flip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcn_deploy.training.transforms import TrainTransform


def _pair(h: int = 24, w: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Labels in vertical stripes; the image's red channel encodes the label, green the row, blue the column."""
    labels = (np.arange(w)[None, :] // 4 % 5 * np.ones((h, 1), int)).astype(np.uint8)
    image = np.stack(
        [labels * 40, np.repeat(np.arange(h)[:, None], w, 1), np.repeat(np.arange(w)[None], h, 0)], -1
    )
    return image.astype(np.uint8), labels


def test_output_has_crop_size_and_known_labels():
    image, labels = _pair()
    t = TrainTransform(crop=(20, 28))
    rng = np.random.default_rng(0)
    for _ in range(20):
        im, lb = t(image, labels, rng)
        assert im.shape == (20, 28, 3) and im.dtype == np.uint8
        assert lb.shape == (20, 28) and lb.dtype == np.uint8
        assert set(np.unique(lb)) <= set(range(5)) | {255}
        assert im.flags.c_contiguous and lb.flags.c_contiguous


def test_no_scaling_keeps_pixels_aligned_through_crop_and_flip():
    image, labels = _pair()
    t = TrainTransform(crop=(16, 16), scale_range=(1.0, 1.0))
    flips = 0
    for seed in range(30):
        im, lb = t(image, labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(im[..., 0], lb * 40)  # image and labels cropped/flipped together
        assert 255 not in lb  # crop fits inside: nothing padded
        flips += bool(im[0, 0, 2] > im[0, -1, 2])  # columns reversed
        assert np.all(np.abs(np.diff(im[..., 1].astype(int), axis=0)) == 1)  # rows stay contiguous
    assert 0 < flips < 30


def test_padding_is_ignore_in_labels_and_fill_in_image():
    image, labels = _pair(8, 8)
    t = TrainTransform(crop=(16, 20), scale_range=(1.0, 1.0), hflip=False, fill=(7, 8, 9))
    im, lb = t(image, labels, np.random.default_rng(3))
    assert im.shape == (16, 20, 3)
    assert np.count_nonzero(lb != 255) == 64  # every original pixel kept exactly once
    np.testing.assert_array_equal(im[lb == 255], np.tile([7, 8, 9], ((lb == 255).sum(), 1)))
    np.testing.assert_array_equal(im[lb != 255][:, 0], lb[lb != 255] * 40)


def test_scaling_changes_resolution_and_uses_nearest_labels():
    image, labels = _pair()
    im, lb = TrainTransform(crop=(40, 60), scale_range=(2.0, 2.0), hflip=False)(
        image, labels, np.random.default_rng(0)
    )
    assert 255 not in lb  # 48x64 after scaling covers the crop
    assert set(np.unique(lb)) <= set(range(5))  # nearest: no invented in-between labels
    half = TrainTransform(crop=(24, 32), scale_range=(0.5, 0.5), hflip=False)
    _, lb = half(image, labels, np.random.default_rng(0))
    assert np.count_nonzero(lb != 255) == 12 * 16


def test_same_seed_same_result():
    image, labels = _pair()
    t = TrainTransform(crop=(16, 16))
    a = t(image, labels, np.random.default_rng(5))
    b = t(image, labels, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("kwargs", [{"crop": (0, 8)}, {"crop": (8, 8), "scale_range": (2.0, 1.0)}])
def test_invalid_config(kwargs):
    with pytest.raises(ValueError):
        TrainTransform(**kwargs)


def test_mismatched_pair_rejected():
    image, labels = _pair()
    with pytest.raises(ValueError):
        TrainTransform(crop=(8, 8))(image, labels[:-1], np.random.default_rng(0))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(4, 40),
    st.integers(4, 40),
    st.integers(1, 48),
    st.integers(1, 48),
    st.floats(0.25, 1.0),
    st.floats(1.0, 2.5),
    st.integers(0, 2**32 - 1),
)
def test_any_sizes_give_the_crop_and_only_known_labels(h, w, ch, cw, lo, hi, seed):
    image, labels = _pair(h, w)
    im, lb = TrainTransform(crop=(ch, cw), scale_range=(lo, hi))(image, labels, np.random.default_rng(seed))
    assert im.shape == (ch, cw, 3) and lb.shape == (ch, cw)
    assert set(np.unique(lb)) <= set(np.unique(labels)) | {255}
