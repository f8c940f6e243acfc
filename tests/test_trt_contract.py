"""Contract tests: fcn-deploy's TensorRT path executed against the strict TensorRT / cuda-python doubles.

They run on the CPU (the double runs the plan's ONNX with ONNX Runtime) and check that our code follows the API
contract of TensorRT 10.3 and 11.4.1; they say nothing about TensorRT's speed or numerics on a GPU.
"""

from __future__ import annotations

import importlib.util
import json
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


# --- the commands, end to end --------------------------------------------------------------------------
def _ort_labels(onnx_path, x):
    from fcn_deploy.runtime.ort_backend import OrtBackend

    ort = OrtBackend(onnx_path)
    try:
        return ort.run(x)["labels"]
    finally:
        ort.close()


@pytest.mark.parametrize(
    "version,precision",
    [("10.3.0", "fp32"), ("10.3.0", "fp16"), ("10.3.0", "int8"), ("11.4.1", "fp32"), ("11.4.1", "int8")],
)  # FP16 lowering does not depend on the version: one run keeps CI short
def test_build_engine_and_run_each_precision(fcn8s, tmp_path, monkeypatch, version, precision):
    from fcn_deploy.core.onnx_io import load_onnx
    from fcn_deploy.engine.backend import TrtBackend
    from fcn_deploy.engine.build import detect_precision

    use_double(monkeypatch, version=version)
    onnx_path, calib = fcn8s
    engine = tmp_path / "m.engine"
    args = [onnx_path, "-o", engine]
    kept = tmp_path / f"m.{precision}.onnx"
    if precision != "fp32":
        args += [f"--{precision}", "--calib-data", calib, "--num-images", 4, "--keep-onnx", kept]
    r = build(args)
    assert f"{precision}, TensorRT {version}" in r.output
    manifest = json.loads((tmp_path / "m.engine.json").read_text())
    assert manifest["precision"] == precision and manifest["tensorrt_version"] == version
    graph = kept if precision != "fp32" else onnx_path
    assert detect_precision(load_onnx(graph)) == precision
    backend = TrtBackend(engine, onnx_path=graph)  # the manifest names the ONNX the plan was built from
    try:
        for hw in ((32, 32), (64, 48)):
            x = batch(*hw)
            out = backend.run(x)
            assert out["labels"].shape == (1, *hw)
            np.testing.assert_array_equal(out["labels"], _ort_labels(graph, x))  # the graph TensorRT was given
        assert backend.last_device_ms is not None and backend.last_device_ms >= 0
        layers = backend.layer_times(x, 2)
        assert layers and all(layer["ms"] >= 0 for layer in layers)
    finally:
        backend.close()


def test_cuda_graph_capture_and_recapture_on_a_shape_change(fcn8s, tmp_path, monkeypatch):
    from fcn_deploy.engine.backend import TrtBackend

    use_double(monkeypatch)
    onnx_path, _ = fcn8s
    build([onnx_path, "-o", tmp_path / "m.engine"])
    backend = TrtBackend(tmp_path / "m.engine", cuda_graph=True)
    try:
        graphs = []
        for hw in ((32, 32), (32, 32), (32, 32), (48, 64), (48, 64), (32, 32)):
            x = batch(*hw, seed=len(graphs))
            out = backend.run(x)
            np.testing.assert_array_equal(out["labels"], _ort_labels(onnx_path, x))
            graphs.append(backend._graph)
        assert graphs[0] is not None and graphs[1] is graphs[0] is graphs[2]  # captured once, replayed
        assert graphs[3] is not None and graphs[3] is not graphs[0]  # re-captured for the new shape
        assert graphs[5] is not graphs[3]
    finally:
        backend.close()


def test_infer_a_short_video_with_the_tensorrt_backend(fcn8s, tmp_path, monkeypatch):
    import cv2
    from test_runtime_helpers import write_video

    use_double(monkeypatch)
    onnx_path, _ = fcn8s
    engine = tmp_path / "m.engine"
    build([onnx_path, "-o", engine])
    video = tmp_path / "clip.avi"
    write_video(video, 6, size=(32, 48))
    out = tmp_path / "out.avi"
    r = CliRunner().invoke(main, ["infer", str(engine), "--backend", "tensorrt", "--source", str(video),
                                  "--output", str(out), "--headless", "--stats"], catch_exceptions=False)  # fmt: skip
    assert r.exit_code == 0, r.output
    cap = cv2.VideoCapture(str(out))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 6


def test_profile_an_engine(fcn8s, tmp_path, monkeypatch):
    use_double(monkeypatch)
    onnx_path, _ = fcn8s
    engine = tmp_path / "m.engine"
    build([onnx_path, "-o", engine])
    out = tmp_path / "p.json"
    r = CliRunner().invoke(main, ["profile", str(engine), "--shape", "32x32", "--iterations", "5", "--warmup-s", "0",
                                  "--per-layer", "--json", str(out)], catch_exceptions=False)  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    text = json.dumps(doc)
    assert "tensorrt" in text and "10.3.0" in text


@pytest.mark.slow
def test_report_tensorrt_rows_score_exactly_like_onnxruntime_on_the_same_graphs(tmp_path, monkeypatch):
    from test_report import SIZE, SYNTHETIC, fast, tiny_checkpoint

    from fcn_deploy.core.datasets import build_dataset
    from fcn_deploy.core.scoring import score
    from fcn_deploy.report.run import build_report
    from fcn_deploy.runtime.ort_backend import OrtBackend

    use_double(monkeypatch)
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    cfg = fast(output=tmp_path / "out", dataset="synthetic", checkpoint=ckpt, backends=("onnxruntime", "tensorrt"),
               precisions=("fp32", "fp16", "int8"))  # fmt: skip
    result = build_report(cfg, echo=lambda s: None)
    rows = {(r["backend"], r["precision"]): r for r in result.rows}
    for precision in ("fp32", "fp16", "int8"):
        assert rows[("tensorrt", precision)]["status"] == "ok", rows[("tensorrt", precision)]
    for precision in ("fp32", "fp16"):  # one graph for both backends
        for key in ("mean_iou", "pixel_accuracy"):
            assert rows[("tensorrt", precision)][key] == rows[("onnxruntime", precision)][key]
    # INT8: TensorRT gets the Q/DQ graph of --target tensorrt; it scores like that graph on ONNX Runtime
    ds = build_dataset("synthetic", None, "val", **SYNTHETIC)
    with OrtBackend(result.output / "models" / "model.int8-trt.onnx") as backend:
        expected = score(backend, ds, SIZE).metrics
    assert rows[("tensorrt", "int8")]["mean_iou"] == expected["mean_iou"]
    assert (result.output / "models" / "model.int8.engine.json").is_file()


# --- the numbered defects of issue 12, each against the double -----------------------------------------
def test_version_compatible_plans_load_after_the_manifest_check(tmp_path, monkeypatch):
    """Defect 3: a --version-compatible plan embeds host code; the runtime must allow it (after the manifest
    check), on the TensorRT that built it and on an 11.x runtime; a --trust load never allows host code."""
    from test_engine_cli import tiny_fcn_onnx

    from fcn_deploy.engine.backend import EngineLoadError, TrtBackend

    use_double(monkeypatch, version="10.3.0")
    onnx_path = tiny_fcn_onnx(tmp_path / "m.onnx")
    engine = tmp_path / "m.engine"
    build([onnx_path, "-o", engine, "--version-compatible"])
    for version in ("10.3.0", "11.4.1"):
        use_double(monkeypatch, version=version)
        backend = TrtBackend(engine)
        try:
            x = batch(48, 64)
            np.testing.assert_array_equal(backend.run(x)["labels"], _ort_labels(onnx_path, x))
            assert backend._runtime.engine_host_code_allowed
        finally:
            backend.close()
    use_double(monkeypatch, version="10.3.0")
    with pytest.raises(EngineLoadError, match="host code"):
        TrtBackend(engine, trust=True)


def test_dla_engine_runs_on_its_core_and_a_dynamic_profile_is_refused(tmp_path, monkeypatch):
    """Defect 5: IRuntime.DLA_core comes from the manifest; a DLA build with min != max is refused, naming the fix."""
    from test_engine_cli import tiny_fcn_onnx

    from fcn_deploy.engine.backend import TrtBackend

    use_double(monkeypatch, devices=ORIN)
    onnx_path = tiny_fcn_onnx(tmp_path / "m.onnx")
    engine = tmp_path / "m.engine"
    r = build([onnx_path, "-o", engine, "--dla-core", 1], code=1)
    assert "fixed shapes only" in r.output and "--min-shape 48x64 --opt-shape 48x64 --max-shape 48x64" in r.output
    assert not engine.exists()
    build([onnx_path, "-o", engine, "--dla-core", 1, "--min-shape", "48x64", "--opt-shape", "48x64",
           "--max-shape", "48x64", "--batch", 1])  # fmt: skip
    assert json.loads((tmp_path / "m.engine.json").read_text())["dla_core"] == 1
    backend = TrtBackend(engine)
    try:
        assert backend._runtime.DLA_core == 1 and backend._engine._dla_core == 1
        x = batch(48, 64)
        np.testing.assert_array_equal(backend.run(x)["labels"], _ort_labels(onnx_path, x))
    finally:
        backend.close()
    use_double(monkeypatch, devices=ORIN, version="11.4.1")  # DLA is back in 11.4.1 (JetPack 7.2.2+)
    build([onnx_path, "-o", tmp_path / "m11.engine", "--dla-core", 0, "--min-shape", "48x64", "--opt-shape",
           "48x64", "--max-shape", "48x64", "--batch", 1])  # fmt: skip


def test_inference_on_another_thread_uses_the_backend_device(tmp_path, monkeypatch):
    """Defect 7: the current CUDA device is per thread; the pipeline runs inference on its own thread."""
    import threading

    from test_engine_cli import tiny_fcn_onnx

    from fcn_deploy.engine.backend import TrtBackend

    two = "NVIDIA A2 (contract double):8.6;NVIDIA A2 (contract double):8.6"
    use_double(monkeypatch, devices=two)
    onnx_path = tiny_fcn_onnx(tmp_path / "m.onnx")
    build([onnx_path, "-o", tmp_path / "m.engine"])
    backend = TrtBackend(tmp_path / "m.engine", device=1)
    x = batch(48, 64)
    result: dict = {}

    def infer():
        try:
            result["labels"] = backend.run(x)["labels"]
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e

    t = threading.Thread(target=infer)
    t.start()
    t.join()
    backend.close()
    assert "error" not in result, result.get("error")
    np.testing.assert_array_equal(result["labels"], _ort_labels(onnx_path, x))


def test_cuda_python_newer_than_the_driver_says_which_to_install(tmp_path, monkeypatch):
    """Defect 1: cuda-python 13 on JetPack 6's CUDA 12.6 driver fails every call with error 35."""
    from test_engine_cli import tiny_fcn_onnx

    use_double(monkeypatch, cuda_python="13.0.3", driver=12060)
    onnx_path = tiny_fcn_onnx(tmp_path / "m.onnx")
    r = build([onnx_path, "-o", tmp_path / "m.engine"], code=3)
    assert "driver (CUDA 12.6) is too old for cuda-python 13.0.3" in r.output
    assert "cuda-python>=12.6,<13" in r.output
    assert not (tmp_path / "m.engine").exists()
    use_double(monkeypatch, cuda_python="12.6.2", driver=12060)
    build([onnx_path, "-o", tmp_path / "m.engine"])
