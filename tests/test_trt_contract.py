"""Contract tests: fcn-deploy's TensorRT path executed against the strict TensorRT / cuda-python doubles.

They run on the CPU (the double runs the plan's ONNX with ONNX Runtime) and check that our code follows the API
contract of TensorRT 10.3 and 11.4.1; they say nothing about TensorRT's speed or numerics on a GPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from trt_double import ORIN, use_double

from fcn_deploy.cli import main

pytestmark = pytest.mark.trt_contract
REPO = Path(__file__).resolve().parents[1]
VERSIONS = ("10.3.0", "11.4.1")


def _api():
    spec = importlib.util.spec_from_file_location("trt_api_check", REPO / "tools" / "trt_api_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_images(folder: Path, n: int, size=(32, 32)) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def fcn8s(tmp_path_factory):
    """A narrow (width 1/16) FCN-8s exported to ONNX, plus calibration images."""
    from test_report import tiny_checkpoint

    root = tmp_path_factory.mktemp("fcn8s")
    ckpt = tiny_checkpoint(root / "tiny.pt")
    onnx_path = root / "fcn8s.onnx"
    r = CliRunner().invoke(main, ["export", "--checkpoint", str(ckpt), "-o", str(onnx_path)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return onnx_path, write_images(root / "calib", 4)


def build(args, code=0):
    r = CliRunner().invoke(main, ["build-engine", *[str(a) for a in args]], catch_exceptions=False)
    assert r.exit_code == code, r.output
    return r


def batch(h=32, w=32, seed=0):
    return np.random.default_rng(seed).standard_normal((1, 3, h, w)).astype(np.float32)


# --- the double's own surface --------------------------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
def test_every_name_the_double_offers_exists_in_the_real_bindings(version):
    api = _api()
    try:
        report = api.check_double(version)
    except api.Unavailable as e:
        pytest.skip(f"real TensorRT bindings not available here: {e}")
    assert report["checked"] > 100
    assert report["missing"] == [], report["missing"]


def test_every_cuda_name_the_double_offers_exists_in_cuda_python():
    rt = pytest.importorskip("cuda.bindings.runtime", reason="real cuda-python is not installed")
    missing = [n for n in _api().double_cuda_surface() if not _has(rt, n)]
    assert missing == []


def _has(root, dotted):
    obj = root
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


# --- the double is strict ------------------------------------------------------------------------------
def test_version_behaviour_follows_the_releases(monkeypatch):
    use_double(monkeypatch, version="10.3.0")
    import tensorrt as trt

    assert trt.__version__ == "10.3.0" and hasattr(trt.BuilderFlag, "FP16")
    assert int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
    use_double(monkeypatch, version="11.4.1")
    import tensorrt as trt11

    assert trt11.__version__ == "11.4.1"
    assert not hasattr(trt11.BuilderFlag, "FP16") and not hasattr(trt11.BuilderFlag, "INT8")
    assert int(trt11.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    with pytest.raises(AttributeError):
        trt11.IInt8EntropyCalibrator2  # noqa: B018


def _logger(trt):
    from fcn_deploy.engine.logger import capturing_logger

    return capturing_logger()


def test_runtime_rules_are_enforced(monkeypatch, tmp_path):
    from test_engine_cli import tiny_fcn_onnx

    use_double(monkeypatch)
    import tensorrt as trt
    from cuda.bindings import runtime as rt

    logger = _logger(trt)
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    with pytest.raises(AttributeError):
        config.dla_core = 1  # a typo is refused like the real pybind11 object does
    with pytest.raises(TypeError):
        config.set_flag(3)  # an int is not a BuilderFlag
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(tiny_fcn_onnx(tmp_path / "m.onnx")))
    assert builder.build_serialized_network(network, config) is None  # dynamic input, no profile
    assert "no optimization profile" in logger.store.reason()
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 3, 32, 32), (1, 3, 48, 64), (1, 3, 96, 128))
    config.add_optimization_profile(profile)
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None  # precision flag + strongly typed
    config.clear_flag(trt.BuilderFlag.FP16)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None and len(memoryview(plan)) > 0

    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    ctx = engine.create_execution_context()
    logger.store.clear()
    assert -1 in tuple(ctx.get_tensor_shape("labels"))  # input shapes not set yet
    assert "set_input_shape first" in logger.store.reason()
    assert not ctx.set_input_shape("image", (1, 3, 200, 64))  # outside the profile
    assert ctx.set_input_shape("image", (1, 3, 32, 40))
    assert tuple(ctx.get_tensor_shape("labels")) == (1, 32, 40)
    _, stream = rt.cudaStreamCreate()
    assert not ctx.execute_async_v3(int(stream))  # no addresses
    _, small = rt.cudaMalloc(16)
    _, inp = rt.cudaMalloc(3 * 32 * 40 * 4)
    ctx.set_tensor_address("image", inp)
    ctx.set_tensor_address("labels", small)
    logger.store.clear()
    assert not ctx.execute_async_v3(int(stream))  # output buffer too small
    assert "needs 10240 bytes" in logger.store.reason()
    _, host = rt.cudaMallocHost(8)
    assert rt.cudaMemcpyAsync(inp, host, 64, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)[0] != 0


def test_foreign_plans_are_refused(monkeypatch, tmp_path):
    from test_engine_cli import tiny_fcn_onnx

    from fcn_deploy.engine.backend import TrtBackend

    use_double(monkeypatch, version="10.3.0")
    onnx_path = tiny_fcn_onnx(tmp_path / "m.onnx")
    build([onnx_path, "-o", tmp_path / "m.engine"])
    plan = (tmp_path / "m.engine").read_bytes()
    for settings in ({"version": "11.4.1"}, {"devices": ORIN}):
        use_double(monkeypatch, **settings)
        import tensorrt as trt

        logger = _logger(trt)
        assert trt.Runtime(logger).deserialize_cuda_engine(plan) is None
        assert "rebuild" in logger.store.reason()
        with pytest.raises(Exception, match="rebuild"):  # our manifest check refuses first
            TrtBackend(tmp_path / "m.engine")
