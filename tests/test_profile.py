"""fcn_deploy.profile: trtexec-style statistics on a real (tiny) ONNX model through ONNX Runtime."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from fcn_deploy.cli import main
from fcn_deploy.core.card import ModelCard, OutputSpec
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.timing import STAT_KEYS, latency_stats
from fcn_deploy.profile import CV_WARNING_PCT, ProfileConfig, ProfileResult, profile_backend
from fcn_deploy.runtime.ort_backend import OrtBackend


def tiny_onnx(path, classes: int = 4, static_hw: tuple[int, int] | None = None) -> str:
    """image (N x 3 x H x W) -> 1x1 Conv -> ArgMax over classes -> labels: a real graph ORT can run."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w = static_hw if static_hw else ("height", "width")
    batch = 1 if static_hw else "batch"
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(classes, 3, 1, 1)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "w"], ["scores"]),
            helper.make_node("ArgMax", ["scores"], ["labels"], axis=1, keepdims=0),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, h, w])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, [batch, h, w])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    ModelCard.default("fcn8s", classes, outputs=(OutputSpec("labels", "labels"),), opt_shape=(24, 32)).attach(model)
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("profile") / "tiny.onnx")


def test_profile_iterations_on_onnxruntime(model_path):
    with OrtBackend(model_path) as backend:
        result = profile_backend(backend, ProfileConfig(shape=(24, 40), batch=2, warmup_s=0.0, iterations=25))
    assert result.iterations == 25
    assert result.shape == (24, 40) and result.batch == 2
    lat = result.latency_ms
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    d = json.loads(json.dumps(result.to_dict()))  # plain JSON all the way down
    assert d["schema"] == "fcn-deploy-profile/1"
    assert d["shape"] == "24x40" and d["batch"] == 2 and d["iterations"] == 25
    assert set(STAT_KEYS) <= set(d["latency_ms"])
    assert d["throughput_images_per_s"] == pytest.approx(2 * d["throughput_qps"], rel=1e-3)
    assert d["throughput_qps"] == pytest.approx(25 / d["total_s"], rel=1e-2)
    assert d["warmup"]["iterations"] >= 1
    env = d["environment"]
    assert env["cpu_model"] and env["cpu_threads_available"] >= 1
    assert "onnxruntime" in env["libraries"] and "numpy" in env["libraries"]
    assert env["tensorrt"] is None or isinstance(env["tensorrt"], str)
    assert d["backend"]["backend"] == "onnxruntime"
    assert "Latency: min = " in result.summary() and "percentile(99%)" in result.summary()


def test_profile_duration_runs_long_enough(model_path):
    with OrtBackend(model_path) as backend:
        t = time.perf_counter()
        result = profile_backend(backend, ProfileConfig(warmup_s=0.05, duration_s=0.3))
        wall = time.perf_counter() - t
    assert result.total_s >= 0.3 and result.iterations >= 10
    assert wall >= 0.35  # warm-up (by seconds) came first
    assert result.shape == (24, 32)  # the card's opt shape


def test_static_model_refuses_another_shape(tmp_path):
    path = tiny_onnx(tmp_path / "static.onnx", static_hw=(16, 16))
    with OrtBackend(path) as backend:
        assert profile_backend(backend, ProfileConfig(iterations=3, warmup_s=0)).shape == (16, 16)
        with pytest.raises(FcnDeployError, match="static input of 16x16"):
            profile_backend(backend, ProfileConfig(shape=(32, 32), iterations=3))


def test_per_layer_needs_a_backend_that_reports_layers(model_path):
    with OrtBackend(model_path) as backend, pytest.raises(FcnDeployError, match="per-layer"):
        profile_backend(backend, ProfileConfig(iterations=3, warmup_s=0, per_layer=True))


class DeclaredOrt(OrtBackend):
    """ORT declaring the TensorRT backend's capabilities, timed for real: per-layer times and a device time."""

    per_layer = True
    device_timing = True

    def run(self, batch):
        t = time.perf_counter()
        out = super().run(batch)
        self.last_device_ms = (time.perf_counter() - t) * 1e3
        return out

    def layer_times(self, batch, iterations):
        return [{"name": "Conv", "ms": 0.01}, {"name": "ArgMax", "ms": 0.001}]


def test_device_time_and_layers_when_the_backend_declares_them(model_path):
    with DeclaredOrt(model_path) as backend:
        result = profile_backend(backend, ProfileConfig(iterations=12, warmup_s=0, per_layer=True))
    assert set(result.stages_ms) == {"gpu_ms"}
    for stats in result.stages_ms.values():
        assert stats["min"] <= stats["median"] <= stats["max"]
    assert result.stages_ms["gpu_ms"]["median"] <= result.latency_ms["max"]
    assert [row["name"] for row in result.layers] == ["Conv", "ArgMax"]
    text = result.summary()
    assert "GPU Time" in text and "Per-layer" in text


class UndeclaredOrt(OrtBackend):
    """Has the hooks but does not declare them: profile reads the declaration, it does not probe."""

    def run(self, batch):
        out = super().run(batch)
        self.last_device_ms = 1.0
        return out

    def layer_times(self, batch, iterations):
        return [{"name": "Conv", "ms": 0.01}]


def test_undeclared_capabilities_are_not_used(model_path):
    with UndeclaredOrt(model_path) as backend:
        assert profile_backend(backend, ProfileConfig(iterations=3, warmup_s=0)).stages_ms == {}
        with pytest.raises(FcnDeployError, match="per-layer"):
            profile_backend(backend, ProfileConfig(iterations=3, warmup_s=0, per_layer=True))


def test_unstable_timings_warn():
    steady = ProfileResult({"backend": "x"}, (8, 8), 1, {"iterations": 1, "seconds": 0.0},
                           latency_stats([10.0] * 20), 20, 0.2)
    assert not steady.unstable and not steady.warnings()
    noisy = ProfileResult({"backend": "x"}, (8, 8), 1, {"iterations": 1, "seconds": 0.0},
                          latency_stats([10.0] * 19 + [30.0]), 20, 0.2)
    assert noisy.latency_ms["cv_pct"] > CV_WARNING_PCT
    assert noisy.unstable and "coefficient of variation" in noisy.warnings()[0]
    assert noisy.to_dict()["unstable"] is True


def test_cli_prints_summary_and_writes_json(model_path, tmp_path):
    out = tmp_path / "p.json"
    r = CliRunner().invoke(main, ["profile", model_path, "--shape", "20x20", "--iterations", "12", "--warmup-s",
                                  "0", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "Latency: min" in r.output and "Throughput:" in r.output
    d = json.loads(out.read_text())
    assert d["iterations"] == 12 and d["shape"] == "20x20"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--iterations", "5", "--duration", "1"], "not both"),
        (["--shape", "0x10"], "must be positive"),
        (["--iterations", "0"], "at least 1"),
        (["--backend", "tensorrt"], "cannot run on --backend tensorrt"),
    ],
)
def test_cli_bad_input_is_one_line(model_path, tmp_path, args, message):
    out = tmp_path / "p.json"
    r = CliRunner().invoke(main, ["profile", model_path, *args, "--json", str(out)])
    assert r.exit_code != 0
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_missing_model(tmp_path):
    r = CliRunner().invoke(main, ["profile", str(tmp_path / "nope.onnx")])
    assert r.exit_code == 1 and "no such model file" in r.output and "Traceback" not in r.output


class GpuTimedOrt(OrtBackend):
    """ORT recording `last_device_ms` after each run, as the TensorRT backend does from CUDA events."""

    device_timing = True

    def run(self, batch):
        t = time.perf_counter()
        out = super().run(batch)
        self.last_device_ms = (time.perf_counter() - t) * 1e3
        return out


def test_last_device_ms_becomes_a_gpu_time_stage(model_path):
    with GpuTimedOrt(model_path) as backend:
        result = profile_backend(backend, ProfileConfig(iterations=10, warmup_s=0))
    assert set(result.stages_ms) == {"gpu_ms"}
    assert result.stages_ms["gpu_ms"]["median"] <= result.latency_ms["max"]
    assert result.stability_cv_pct == result.stages_ms["gpu_ms"]["cv_pct"]
    assert "GPU Time (H2D + compute + D2H)" in result.summary()


def test_cli_choices_and_defaults_come_from_the_library():
    from fcn_deploy.chain.backends import BACKENDS
    from fcn_deploy.cli import profile as profile_cli

    params = {p.name: p for p in profile_cli.command.params}
    assert tuple(params["backend"].type.choices) == BACKENDS
    assert params["batch"].default == ProfileConfig().batch
    assert params["warmup_s"].default == ProfileConfig().warmup_s
    assert f"[default: {ProfileConfig().duration_s:g}]" in params["duration"].help
