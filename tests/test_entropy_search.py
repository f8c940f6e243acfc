"""The entropy calibrator's clip search (all candidates at once from prefix sums) picks exactly the clip that
TensorRT's per-candidate loop picks, on histograms of the shapes activations take."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fcn_deploy.calibration.ranges import NUM_BINS, NUM_LEVELS, _entropy_bins


def loop_reference(hist: np.ndarray) -> int:
    """The direct search: for each clip i, quantise the kept bins into 128 levels and measure KL(p || q)."""
    nonzero = np.nonzero(hist)[0]
    last = int(nonzero[-1]) + 1 if nonzero.size else NUM_LEVELS
    if last <= NUM_LEVELS:
        return last
    hist = hist.astype(np.float64)
    hist[0] = hist[1]
    best, best_i = math.inf, last
    for i in range(NUM_LEVELS, last + 1):
        sliced = hist[:i]
        p = sliced.copy()
        p[i - 1] += hist[i:].sum()
        group = np.minimum(np.arange(i) // (i // NUM_LEVELS), NUM_LEVELS - 1)
        nz = sliced != 0
        level_sum = np.bincount(group, weights=sliced, minlength=NUM_LEVELS)
        level_nz = np.bincount(group, weights=nz, minlength=NUM_LEVELS)
        q = np.where(nz, (level_sum / np.maximum(level_nz, 1))[group], 0.0)
        p, q = p / p.sum(), q / max(q.sum(), 1e-300)
        used = p > 0
        kl = float(np.sum(p[used] * np.log(p[used] / np.maximum(q[used], 1e-10))))
        if kl < best:
            best, best_i = kl, i
    return best_i


def histogram(x: np.ndarray, headroom: float) -> np.ndarray:
    limit = float(x.max()) * headroom
    return np.bincount(np.minimum((x * (NUM_BINS / limit)).astype(np.int64), NUM_BINS - 1), minlength=NUM_BINS)


rng = np.random.default_rng(7)
CASES = {
    "gaussian |x|": histogram(np.abs(rng.standard_normal(60_000)) * 3, 1.1),
    "relu": histogram(np.maximum(rng.standard_normal(60_000), 0), 1.0),
    "exponential": histogram(rng.exponential(1.0, 40_000), 1.25),
    "heavy tail (t, 2 dof)": histogram(np.abs(rng.standard_t(2, 60_000)), 1.0),
    "outliers far out": histogram(np.concatenate([rng.uniform(0, 1, 5000), rng.uniform(50, 51, 10)]), 1.0),
    "sparse counts": np.bincount(rng.choice(NUM_BINS, 300, replace=False), minlength=NUM_BINS) * 3,
    "few bins": np.bincount(rng.integers(0, 100, 500), minlength=NUM_BINS),
    "all zero": np.zeros(NUM_BINS, np.int64),
}


@pytest.mark.parametrize("name", CASES)
def test_the_prefix_sum_search_picks_the_loops_clip(name):
    hist = CASES[name]
    assert _entropy_bins(hist) == loop_reference(hist)
