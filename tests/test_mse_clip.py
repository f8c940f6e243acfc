"""The mse calibrator's clip (least expected squared error over the |x| histogram, all candidates at once from
prefix sums) is as good as the best clip found by fake-quantizing the samples themselves at every candidate."""

from __future__ import annotations

import numpy as np
import pytest

from fcn_deploy.calibration.ranges import NUM_BINS, NUM_LEVELS, _AbsHistogram, _mse_bins


def sample_mse(x: np.ndarray, clip: float) -> float:
    """Mean squared error of |x| quantized to 128 levels over [0, clip], the tail clipped."""
    step = clip / NUM_LEVELS
    q = np.minimum(np.round(x / step), NUM_LEVELS) * step
    return float(np.mean((x - q) ** 2))


rng = np.random.default_rng(11)
SAMPLES = {
    "gaussian |x|": np.abs(rng.standard_normal(40_000)) * 3,
    "relu": np.maximum(rng.standard_normal(40_000), 0),
    "exponential": rng.exponential(1.0, 40_000),
    "heavy tail (t, 2 dof)": np.abs(rng.standard_t(2, 40_000)),
    "a few far outliers": np.concatenate([rng.uniform(0, 1, 20_000), rng.uniform(40, 41, 4)]),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_the_histogram_clip_is_as_good_as_the_best_sample_clip(name):
    x = SAMPLES[name]
    hist = _AbsHistogram()
    hist.add(x)
    width = hist.limit / NUM_BINS
    chosen = hist.threshold("mse")
    assert chosen == pytest.approx(min(_mse_bins(hist.counts) * width, float(x.max())))
    candidates = np.arange(1, NUM_BINS + 1) * width
    best = min(sample_mse(x, c) for c in candidates[:: max(1, NUM_BINS // 512)])
    assert sample_mse(x, chosen) <= 1.02 * best + 1e-12


def test_an_all_zero_tensor_keeps_a_zero_range():
    hist = _AbsHistogram()
    hist.add(np.zeros(100, np.float32))
    assert hist.threshold("mse") == 0.0
