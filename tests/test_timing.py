"""fcn_deploy.core.timing: the one percentile convention and latency summary, used by profile and the pipeline."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from fcn_deploy.core.timing import STAT_KEYS, latency_stats, percentile, time_calls
from fcn_deploy.runtime.stats import RunStats


def test_percentile_is_trtexecs_nearest_rank():
    values = list(range(1, 101))  # 1..100 ms
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 50) == 50
    assert percentile([7.0], 99) == 7.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.01, max_value=1e4, allow_nan=False), min_size=1, max_size=300))
def test_latency_stats_are_ordered(samples):
    s = latency_stats(samples)
    assert set(STAT_KEYS) <= set(s)
    eps = 1e-9 * max(samples)
    assert s["min"] - eps <= s["median"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"] + eps
    assert s["min"] - eps <= s["mean"] <= s["max"] + eps
    assert s["cv_pct"] >= 0




def test_percentile_is_always_a_measured_sample():
    samples = [1.0, 2.0, 3.0, 4.0, 100.0] * 4  # 20 runs: interpolation would report a p95 no run took
    s = latency_stats(samples)
    assert s["p95"] in samples and s["p99"] in samples and s["p90"] in samples
    assert s["p95"] == 100.0 and s["median"] == 3.0


def test_pipeline_stats_use_the_same_convention():
    samples = [float(v) for v in (5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 30, 11)]
    stats = RunStats()
    for ms in samples:
        stats.add("infer", ms)
        stats.frame_done(ms)
    expected = latency_stats(samples)
    d = stats.to_dict()
    for summary in (d["stage_ms"]["infer"], d["latency_ms"]):
        assert summary["mean"] == round(expected["mean"], 3)
        assert summary["p50"] == round(expected["median"], 3)
        assert summary["p95"] == round(expected["p95"], 3)
    assert d["stage_ms"]["pre"] == {"mean": 0.0, "p50": 0.0, "p95": 0.0}


def test_time_calls_times_each_call_after_warmup():
    calls = []

    def sleepy():
        calls.append(1)
        time.sleep(0.01)

    ms = time_calls(sleepy, runs=3, warmup=2)
    assert len(calls) == 5 and len(ms) == 3
    assert all(m >= 9.0 for m in ms)
