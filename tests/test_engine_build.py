"""Build logic that is not a TensorRT call: precision detection, parser error text, and the builder config we
ask for (checked on a recording stand-in for the TensorRT module: the default build sets no flags at all)."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.engine.build import (
    BuildOptions,
    check_level,
    config_from_options,
    detect_precision,
    format_parser_error,
)
from fcn_deploy.engine.profile_shapes import Profile
from fcn_deploy.engine.trt_compat import TrtVersion

REPO = Path(__file__).resolve().parents[1]
TRT_SOURCES = [
    *(REPO / "fcn_deploy" / "engine").glob("*.py"),
]
PROFILE = Profile("image", (1, 1, 2), (32, 32), (360, 480), (720, 960))


def conv_model(weight_dtype=np.float32, qdq=False):
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), weight_dtype), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["logits"], name="score")]
    inits = [w]
    if qdq:
        inits += [
            numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["image", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
            helper.make_node("Conv", ["dq", "w"], ["logits"]),
        ]
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits))


def test_detect_precision():
    assert detect_precision(conv_model()) == "fp32"
    assert detect_precision(conv_model(np.float16)) == "fp16"
    assert detect_precision(conv_model(qdq=True)) == "int8"


def test_parser_error_names_the_node():
    err = SimpleNamespace(
        node=lambda: 12,
        node_name=lambda: "upscore8",
        node_operator=lambda: "ConvTranspose",
        desc=lambda: "Assertion failed:\n  kernel weights   must be constant",
    )
    assert (
        format_parser_error(err)
        == "node 12 upscore8 (ConvTranspose): Assertion failed: kernel weights must be constant"
    )
    graph_level = SimpleNamespace(
        node=lambda: -1, node_name=lambda: "", node_operator=lambda: "", desc=lambda: "bad IR"
    )
    assert format_parser_error(graph_level) == "graph: bad IR"


def test_optimization_level_range():
    check_level(None)
    check_level(5)
    with pytest.raises(FcnDeployError, match="0..5"):
        check_level(6)


class Recorder:
    """Records what config_from_options asks of a builder config; stands in for TensorRT, which cannot run here."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        return lambda *a, **k: self.calls.append((name, a, k)) or True

    def __setattr__(self, name, value):
        if name == "calls":
            object.__setattr__(self, name, value)
        else:
            self.calls.append(("set", name, value))


def fake_trt():
    ns = SimpleNamespace
    return ns(
        MemoryPoolType=ns(WORKSPACE="WORKSPACE"),
        DeviceType=ns(DLA="DLA"),
        BuilderFlag=ns(GPU_FALLBACK="GPU_FALLBACK", VERSION_COMPATIBLE="VERSION_COMPATIBLE"),
    )


def build_config(options, version="10.3.0", cc=(8, 7), dla_cores=2):
    config, profile = Recorder(), Recorder()
    builder = SimpleNamespace(
        create_builder_config=lambda: config,
        create_optimization_profile=lambda: profile,
        num_DLA_cores=dla_cores,
    )
    config_from_options(fake_trt(), builder, options, TrtVersion.parse(version), cc, [])
    return config.calls, profile.calls


def test_default_build_sets_no_flags_and_one_profile():
    calls, profile_calls = build_config(BuildOptions(PROFILE))
    names = [c[0] for c in calls]
    assert "set_flag" not in names  # no VERSION_COMPATIBLE, no precision flags
    assert names == ["add_optimization_profile"]
    assert profile_calls == [("set_shape", ("image", (1, 3, 32, 32), (1, 3, 360, 480), (2, 3, 720, 960)), {})]
    assert not BuildOptions(PROFILE).to_dict()["version_compatible"]


def test_options_reach_the_config():
    calls, _ = build_config(
        BuildOptions(PROFILE, workspace_bytes=2 << 30, builder_optimization_level=5, version_compatible=True)
    )
    assert ("set_memory_pool_limit", ("WORKSPACE", 2 << 30), {}) in calls
    assert ("set", "builder_optimization_level", 5) in calls
    assert ("set_flag", ("VERSION_COMPATIBLE",), {}) in calls


def test_dla_with_a_dynamic_profile_is_refused():
    """DLA layers take fixed shapes: a dynamic profile would silently put every layer on the GPU (defect 5)."""
    with pytest.raises(FcnDeployError, match=r"fixed shapes only.*--min-shape 360x480 --opt-shape 360x480"):
        build_config(BuildOptions(PROFILE, dla_core=0))


FIXED = Profile("image", (1, 1, 1), (360, 480), (360, 480), (360, 480))


def test_dla_with_gpu_fallback_on_orin_10_3():
    calls, _ = build_config(BuildOptions(FIXED, dla_core=1))
    assert ("set", "default_device_type", "DLA") in calls
    assert ("set", "DLA_core", 1) in calls
    assert ("set_flag", ("GPU_FALLBACK",), {}) in calls


@pytest.mark.parametrize(
    "version,cc,match",
    [("10.13.3.9", (11, 0), "Thor"), ("11.4.0", (8, 7), "11.4.1"), ("10.3.0", (9, 0), "not a Jetson Orin")],
)
def test_dla_refused_before_the_config_is_touched(version, cc, match):
    with pytest.raises(FcnDeployError, match=match):
        build_config(BuildOptions(PROFILE, dla_core=0), version=version, cc=cc)


FORBIDDEN = {
    # removed in TensorRT 11 (or weakly typed): never used anywhere
    "FP16",
    "INT8",
    "BF16",
    "FP8",
    "INT4",
    "EXPLICIT_BATCH",
    "int8_calibrator",
    "IInt8EntropyCalibrator2",
    "IInt8MinMaxCalibrator",
    "platform_has_fast_fp16",
    "platform_has_fast_int8",
    "set_dynamic_range",
    "OBEY_PRECISION_CONSTRAINTS",
    "set_calibration_profile",
    # security defaults (reliability.md part c); engine_host_code_allowed: see the test below
    "plugins_to_serialize",
}


@pytest.mark.parametrize("path", TRT_SOURCES, ids=lambda p: p.name)
def test_no_removed_or_unsafe_tensorrt_api(path):
    used = {n.attr for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute)}
    assert not used & FORBIDDEN


def test_host_code_is_allowed_only_for_a_checked_version_compatible_plan():
    """One assignment in the whole engine package, in the backend, guarded by the checked manifest's flag."""
    found = []
    for path in TRT_SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.If):
                for child in node.body:
                    for target in getattr(child, "targets", []):
                        if getattr(target, "attr", "") == "engine_host_code_allowed":
                            found.append((path.name, ast.unparse(node.test), ast.unparse(child.value)))
        assigned = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "engine_host_code_allowed"
                    and isinstance(n.ctx, ast.Store)]  # fmt: skip
        assert len(assigned) == (1 if path.name == "backend.py" else 0), path
    assert len(found) == 1
    name, test, value = found[0]
    assert name == "backend.py" and "checked is not None" in test and "version_compatible" in test
    assert value == "True"


@pytest.mark.parametrize("path", TRT_SOURCES, ids=lambda p: p.name)
def test_tensorrt_is_imported_only_inside_functions(path):
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any(n.split(".")[0] in ("tensorrt", "torch") for n in names), path
