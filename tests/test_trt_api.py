"""API conformance: every TensorRT name our modules use exists in the real Python bindings of TensorRT 10.3
(JetPack 6) and 11.4 (desktop, JetPack 7.2.2+). The names are collected by AST from the sources; the bindings are
the real `tensorrt-cu12/cu13-bindings` wheels from PyPI, imported with stub libnvinfer libraries
(tools/trt_api_check.py). Skips, with the reason, where PyPI or a C compiler is not reachable."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("trt_api_check", REPO / "tools" / "trt_api_check.py")
api = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(api)

V10, V11 = (v for _, v in api.DEFAULT_RELEASES)
MADE_UP = "NoSuchThing.really_not_there"
REMOVED_IN_11 = (
    "BuilderFlag.FP16",
    "BuilderFlag.INT8",
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
    "Builder.platform_has_fast_fp16",
    "IBuilderConfig.int8_calibrator",
    "IInt8EntropyCalibrator2",
    "ITensor.set_dynamic_range",
)

BAD_CODE = textwrap.dedent("""
    import tensorrt as trt

    def build(logger):
        builder = trt.Builder(logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
        config = builder.create_builder_config()
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        config.int8_calibrator = None
        return network
""")


def test_collector_finds_module_and_object_names():
    used = api.collect_chains()
    for name in (
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
        "OnnxParser.parse_from_file",
        "ParserError.node_name",
        "IBuilderConfig.set_memory_pool_limit",
        "IBuilderConfig.DLA_core",
        "ITimingCache.serialize",
        "Builder.build_serialized_network",
        "Runtime.deserialize_cuda_engine",
        "ICudaEngine.get_tensor_profile_shape",
        "IExecutionContext.execute_async_v3",
        "IExecutionContext.set_tensor_address",
        "TensorIOMode.INPUT",
        "ILogger",
    ):
        assert name in used, name
    assert all(where for where in used.values())
    assert len(used) >= 40


def test_collector_sees_removed_api_in_code(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(BAD_CODE)
    used = api.collect_chains([bad])
    for name in (
        "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
        "Builder.platform_has_fast_fp16",
        "BuilderFlag.FP16",
        "IBuilderConfig.set_flag",
        "IBuilderConfig.int8_calibrator",
    ):
        assert name in used, (name, used)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    bad = tmp_path_factory.mktemp("bad") / "bad.py"
    bad.write_text(BAD_CODE)
    extra = (MADE_UP, *REMOVED_IN_11, *api.collect_chains([bad]))
    try:
        return api.check(extra=extra)
    except api.Unavailable as e:
        pytest.skip(f"TensorRT bindings not available here: {e}")


def test_every_name_we_use_exists_in_10x_and_11x(report):
    used = set(api.collect_chains())
    for version in (V10, V11):
        missing = used & set(report["releases"][version]["missing"])
        assert not missing, f"TensorRT {version} lacks {sorted(missing)} (used at {api.collect_chains()})"
    assert report["releases"][V10]["version"].startswith("10.")
    assert report["releases"][V11]["version"].startswith("11.")


def test_check_fails_on_removed_and_made_up_names(report):
    missing10, missing11 = (set(report["releases"][v]["missing"]) for v in (V10, V11))
    assert MADE_UP in missing10 and MADE_UP in missing11
    for name in REMOVED_IN_11:
        assert name in missing11, name
        assert name not in missing10, name  # deprecated but present in 10.x: the check distinguishes versions
    assert not report["ok"]


def test_script_exit_code_and_json(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "trt_api_check.py"), "--extra", "BuilderFlag.FP16"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = json.loads(proc.stdout)
    if proc.returncode == 2:
        pytest.skip(f"TensorRT bindings not available here: {out['unavailable']}")
    assert proc.returncode == 1
    assert out["missing_where"] == {"BuilderFlag.FP16": ["--extra"]}


LOGGER_PROBE = """
import sys, tensorrt_bindings
sys.modules["tensorrt"] = tensorrt_bindings
import tensorrt as trt
from fcn_deploy.engine.logger import capturing_logger
logger = capturing_logger()
assert isinstance(logger, trt.ILogger)
logger.log(trt.ILogger.Severity.VERBOSE, "tactic 7")
logger.log(trt.ILogger.Severity.ERROR, "expecting library version 10.3.0.30 got 10.13.3.9")
def boom(*a):
    raise ValueError("a bug in our store must not reach TensorRT")
logger.store.add = boom
logger.log(trt.ILogger.Severity.ERROR, "dropped, without raising")
print(logger.store.reason(), [r.severity for r in logger.store.records])
"""


@pytest.mark.parametrize("release", api.DEFAULT_RELEASES, ids=lambda r: r[1])
def test_capturing_logger_subclasses_the_real_ilogger(release):
    try:
        wheel_dir = api.fetch_wheel(*release)
        stubs = api.build_stubs(wheel_dir)
    except api.Unavailable as e:
        pytest.skip(f"TensorRT bindings not available here: {e}")
    env = dict(
        os.environ, LD_LIBRARY_PATH=str(stubs), PYTHONPATH=os.pathsep.join([str(wheel_dir), str(REPO)])
    )
    proc = subprocess.run(
        [sys.executable, "-c", LOGGER_PROBE], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    # VERBOSE reaches a Python ILogger but is not kept (only WARNING+ without -v)
    assert proc.stdout.strip() == "expecting library version 10.3.0.30 got 10.13.3.9 ['ERROR']"


def _cuda_names() -> set[str]:
    """cudart names cuda_rt.py calls: call("cudaX", ...) literals and cudart().Enum.member chains."""
    tree = ast.parse((REPO / "fcn_deploy" / "engine" / "cuda_rt.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "call"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner = node.value
            if isinstance(inner.value, ast.Call) and getattr(inner.value.func, "id", "") == "cudart":
                names.add(f"{inner.attr}.{node.attr}")
    return names


def test_cuda_python_names_exist():
    rt = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    names = _cuda_names()
    assert {
        "cudaMalloc",
        "cudaMallocHost",
        "cudaMemcpyAsync",
        "cudaStreamBeginCapture",
        "cudaGraphInstantiate",
        "cudaMemcpyKind.cudaMemcpyHostToDevice",
        "cudaEventElapsedTime",
    } <= names
    missing = []
    for name in sorted(names):
        obj = rt
        for part in name.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            missing.append(name)
    assert not missing


def _real_bindings_env(release, tmp_path):
    """Environment where `import tensorrt` is the real 10.x/11.x bindings (stubbed libnvinfer), no GPU."""
    try:
        wheel_dir = api.fetch_wheel(*release)
        stubs = api.build_stubs(wheel_dir)
    except api.Unavailable as e:
        pytest.skip(f"TensorRT bindings not available here: {e}")
    shim = tmp_path / "shim" / "tensorrt"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        "from tensorrt_bindings import *  # noqa\nfrom tensorrt_bindings import __version__\n"
    )
    path = os.pathsep.join([str(shim.parent), str(wheel_dir), str(REPO)])
    return dict(os.environ, LD_LIBRARY_PATH=str(stubs), PYTHONPATH=path)


@pytest.mark.parametrize("release", api.DEFAULT_RELEASES, ids=lambda r: r[1])
def test_build_engine_and_backend_with_real_bindings_but_no_gpu_exit_3(release, tmp_path):
    """`import tensorrt` works (real bindings) but there is no GPU: stopped at the GPU check, nothing written."""
    from test_engine_cli import tiny_fcn_onnx  # tests/ is on sys.path under pytest's default import mode

    env = _real_bindings_env(release, tmp_path)
    model = tiny_fcn_onnx(tmp_path / "m.onnx")
    exe = str(Path(sys.executable).with_name("fcn-deploy"))
    proc = subprocess.run(
        [exe, "build-engine", str(model)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    expected = "no usable NVIDIA GPU" if importlib.util.find_spec("cuda") else "cuda-python"
    assert expected in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "shim"]

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    probe = (
        "import tensorrt, sys\n"
        "from fcn_deploy.engine.backend import TrtBackend\n"
        "from fcn_deploy.core.errors import MissingDependencyError\n"
        "try:\n    TrtBackend(sys.argv[1])\n"
        "except MissingDependencyError as e:\n    print(tensorrt.__version__, e.exit_code, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(engine)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{release[1].split('.post')[0]} 3 ")
