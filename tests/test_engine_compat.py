"""Version gates (one module), DLA rules, the missing-TensorRT error, and the logger's message store."""

from __future__ import annotations

import importlib.util

import pytest

from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.engine import trt_compat
from fcn_deploy.engine.logger import MessageStore
from fcn_deploy.engine.trt_compat import TrtVersion, check_dla, dla_supported

ORIN, THOR_CUDA12, THOR_CUDA13, H100, RTX4090 = (8, 7), (10, 1), (11, 0), (9, 0), (8, 9)
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.parametrize(
    "text,expected",
    [
        ("10.3.0.30", (10, 3, 0, 30)),
        ("11.4.1", (11, 4, 1, 0)),
        ("10.7.0.post1", (10, 7, 0, 0)),
        ("11.0", (11, 0, 0, 0)),
    ],
)
def test_parse_version(text, expected):
    v = TrtVersion.parse(text)
    assert (v.major, v.minor, v.patch, v.build) == expected


def test_parse_version_rejects_garbage():
    with pytest.raises(FcnDeployError):
        TrtVersion.parse("ten")


def test_versions_order():
    assert TrtVersion.parse("10.13.3.9") > TrtVersion.parse("10.3.0.30")
    assert TrtVersion.parse("11.4.1") > TrtVersion.parse("11.4.0.106")


@pytest.mark.parametrize(
    "version,cc,allowed,why",
    [
        ("10.3.0.30", ORIN, True, "Orin"),  # JetPack 6
        ("10.7.0", ORIN, True, "Orin"),  # last 10.x with DLA
        ("10.8.0", ORIN, False, "10.7 was the last"),
        ("10.13.3.9", ORIN, False, "10.7 was the last"),
        ("10.13.3.9", THOR_CUDA13, False, "Thor"),  # JetPack 7.0
        ("11.4.0.106", ORIN, False, "11.4.1"),
        ("11.4.1", ORIN, True, "Orin"),  # JetPack 7.2.2+
        ("11.6.0", ORIN, True, "Orin"),
        ("11.4.1", THOR_CUDA13, False, "Thor"),
        ("11.4.1", THOR_CUDA12, False, "Thor"),
        ("10.3.0", H100, False, "not a Jetson Orin"),
        ("11.4.0.106", RTX4090, False, "not a Jetson Orin"),
        ("10.3.0", None, False, "no CUDA device"),
    ],
)
def test_dla_rules(version, cc, allowed, why):
    ok, reason = dla_supported(TrtVersion.parse(version), cc)
    assert ok is allowed
    assert why in reason


def test_check_dla_refuses_with_reason_and_checks_core_index():
    check_dla(TrtVersion.parse("10.3.0"), ORIN, core=1, num_cores=2)
    with pytest.raises(FcnDeployError, match="--dla-core 2: this device has 2 DLA core"):
        check_dla(TrtVersion.parse("10.3.0"), ORIN, core=2, num_cores=2)
    with pytest.raises(FcnDeployError, match="--dla-core 0: Jetson Thor.*drop --dla-core"):
        check_dla(TrtVersion.parse("11.4.1"), THOR_CUDA13, core=0, num_cores=0)


def test_too_old_tensorrt_is_refused():
    with pytest.raises(MissingDependencyError, match="TensorRT 8.6.1 is too old"):
        trt_compat.require_supported(TrtVersion.parse("8.6.1"))
    trt_compat.require_supported(TrtVersion.parse("10.3.0"))


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_missing_tensorrt_is_exit_3_with_the_fix():
    with pytest.raises(MissingDependencyError) as e:
        trt_compat.import_tensorrt()
    assert e.value.exit_code == 3
    assert "pip install 'fcn-deploy[tensorrt]'" in str(e.value) and "JetPack" in str(e.value)


def test_message_store_reason_prefers_errors():
    store = MessageStore(verbose=True)
    assert "no error" in store.reason()
    store.add("INFO", "tactics")
    store.add("WARNING", "weights  truncated")
    assert store.reason() == "weights truncated"
    store.add("ERROR", "Serialization assertion stdVersionRead == serializationVersion failed.")
    store.add("INTERNAL_ERROR", "expecting library version 10.3.0.30 got 10.13.3.9")
    assert store.reason() == (
        "Serialization assertion stdVersionRead == serializationVersion failed. | "
        "expecting library version 10.3.0.30 got 10.13.3.9"
    )
    assert len(store.records) == 4


def test_message_store_filters_by_severity_and_caps_what_it_keeps():
    """A Python ILogger gets every VERBOSE tactic line of a build: keep WARNING+ unless -v, and a bounded count."""
    quiet = MessageStore(verbose=False)
    for i in range(5000):
        quiet.add("VERBOSE", f"tactic {i}")
        quiet.add("INFO", "timing")
    quiet.add("ERROR", "out of memory")
    assert [r.severity for r in quiet.records] == ["ERROR"] and quiet.dropped == 10000
    loud = MessageStore(verbose=True, max_records=100)
    for i in range(5000):
        loud.add("VERBOSE", f"tactic {i}")
    loud.add("ERROR", "out of memory")
    assert len(loud.records) == 100 and loud.records[-1].message == "out of memory"
    assert loud.reason() == "out of memory"
