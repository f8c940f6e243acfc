"""The report's latency: every row of a size timed in interleaved rounds after a warm-up (fcn_deploy.report.latency)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from test_calibration import tiny_fcn

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.report.inputs import ReportConfig, check_inputs
from fcn_deploy.report.latency import MIN_RUNS, WARMUP_RUNS, interleaved
from fcn_deploy.runtime.ort_backend import OrtBackend

BATCH = np.random.default_rng(0).standard_normal((1, 3, 16, 16), np.float32)


class Recorded(OrtBackend):
    """A real ONNX Runtime backend that notes each run in a shared log, and sleeps while `busy` says the machine
    is loaded (another job on the core): what the report sees on a shared machine."""

    def __init__(self, path: Path, name: str, log: list[str], busy=lambda: False, fail_after: int | None = None):
        super().__init__(path)
        self.tag, self.log, self.busy, self.fail_after = name, log, busy, fail_after

    def run(self, batch):
        if self.fail_after is not None and self.log.count(self.tag) >= self.fail_after:
            raise FcnDeployError(f"{self.tag}: the device went away")
        self.log.append(self.tag)
        if self.busy():
            time.sleep(0.02)
        return super().run(batch)


def cfg(**kw) -> ReportConfig:
    base = dict(output=Path("unused"), dataset="synthetic", latency_warmup_s=0.0, latency_duration_s=0.0)
    return ReportConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_fcn(tmp_path_factory.mktemp("latency") / "m.onnx")


def test_rows_are_warmed_up_then_timed_in_interleaved_rounds(model):
    log: list[str] = []
    with Recorded(model, "A", log) as a, Recorded(model, "B", log) as b:
        stats = interleaved({"a": (a, BATCH), "b": (b, BATCH)}, cfg(latency_iterations=6, latency_rounds=3))
    assert log == ["A", "B"] * WARMUP_RUNS + ["A", "A", "B", "B"] * 3
    for s in stats.values():
        assert 0 < s["min"] <= s["median"] <= s["p95"] <= s["max"]


def test_a_duration_budget_takes_at_least_the_minimum_runs_spread_over_the_rounds(model):
    log: list[str] = []
    with Recorded(model, "A", log) as a:
        interleaved({"a": (a, BATCH)}, cfg(latency_duration_s=0.0, latency_rounds=4))
    assert len(log) - WARMUP_RUNS >= MIN_RUNS


def test_load_during_the_measurement_hits_every_row_alike(model):
    """Two identical rows; another job loads the machine for the middle of the measurement. Timed one after the
    other, one row would take all the load (a ratio far from 1); interleaved, both see the same share."""
    log: list[str] = []
    timed_calls = 2 * WARMUP_RUNS + 2 * 20

    def busy() -> bool:  # calls 30% .. 60% of the way through run under load
        return 0.3 * timed_calls <= len(log) < 0.6 * timed_calls

    with Recorded(model, "A", log, busy) as a, Recorded(model, "B", log, busy) as b:
        stats = interleaved({"a": (a, BATCH), "b": (b, BATCH)}, cfg(latency_iterations=20, latency_rounds=5))
    for s in stats.values():
        assert s["max"] >= 20.0  # each row saw the load ...
    assert 0.5 < stats["a"]["median"] / stats["b"]["median"] < 2.0  # ... and neither median is the loaded one


def test_a_row_that_fails_while_timed_is_named_and_the_others_still_measured(model):
    log: list[str] = []
    with Recorded(model, "A", log) as a, Recorded(model, "B", log, fail_after=WARMUP_RUNS + 3) as b:
        stats = interleaved({"a": (a, BATCH), "b": (b, BATCH)}, cfg(latency_iterations=10, latency_rounds=2))
    assert stats["b"] == "B: the device went away"
    assert isinstance(stats["a"], dict) and log.count("A") == WARMUP_RUNS + 10


def test_latency_rounds_below_one_are_refused():
    with pytest.raises(FcnDeployError, match="latency rounds 0: must be at least 1"):
        check_inputs(cfg(latency_rounds=0, checkpoint=Path("x.pt")), builder=None)
