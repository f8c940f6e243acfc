"""fcn_deploy.core.environment: the fingerprint stored beside every timing, read from this very machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fcn_deploy.core.environment import CPU_FLAGS, cpu_flags, cpu_model, fingerprint

CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_field(name: str) -> str | None:
    for line in CPUINFO.read_text(errors="replace").splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return None


@pytest.mark.skipif(not CPUINFO.is_file(), reason="needs /proc/cpuinfo (Linux)")
def test_records_the_cpu_model_and_its_vnni_amx_flags():
    env = fingerprint()
    model = cpuinfo_field("model name")
    if model is not None:
        assert env["cpu_model"] == model == cpu_model()
    assert env["cpu_model"]
    flags = cpuinfo_field("flags")
    if flags is None:
        pytest.skip("/proc/cpuinfo lists no flags on this CPU")
    present = set(flags.split())
    assert set(env["cpu_flags"]) == set(CPU_FLAGS)
    assert env["cpu_flags"] == {f: f in present for f in CPU_FLAGS} == cpu_flags()
    if "avx512_vnni" in present:  # the machine these tests were written on: a Xeon with VNNI and AMX
        assert env["cpu_flags"]["avx512_vnni"] and env["cpu_flags"]["avx_vnni"] == ("avx_vnni" in present)


def test_other_machine_shapes():
    lines = ["processor\t: 0", "model name\t: Some CPU", "flags\t\t: fpu sse avx_vnni amx_int8"]
    assert cpu_model(lines) == "Some CPU"
    assert cpu_flags(lines) == {
        "avx512_vnni": False, "avx_vnni": True, "amx_int8": True, "amx_bf16": False, "avx512_bf16": False
    }
    assert cpu_flags(["Hardware\t: BCM2835"]) is None and cpu_model(["Hardware\t: BCM2835"]) == "BCM2835"


def test_counts_threads_load_and_is_plain_json():
    env = json.loads(json.dumps(fingerprint(gpu={"name": "X"})))
    assert env["gpu"] == {"name": "X"}
    assert env["cpu_count"] >= 1 and 1 <= env["cpu_threads_available"] <= env["cpu_count"]
    assert len(env["load_average"]) == 3
    assert env["platform"] and env["libraries"]["python"]
    assert env["tensorrt"] is None or isinstance(env["tensorrt"], str)


def test_versions_only_of_libraries_already_imported():
    """The fingerprint imports nothing: a fresh interpreter that loaded numpy but no onnxruntime/torch lists only
    numpy (and python)."""
    code = (
        "import json, sys, numpy; from fcn_deploy.core.environment import fingerprint; e = fingerprint(); "
        "print(json.dumps([e['libraries'], 'torch' in sys.modules, 'onnxruntime' in sys.modules]))"
    )
    libraries, torch_loaded, ort_loaded = json.loads(subprocess.check_output([sys.executable, "-c", code]))
    assert not torch_loaded and not ort_loaded
    assert "torch" not in libraries and "onnxruntime" not in libraries
    assert set(libraries) == {"python", "numpy"}
    import numpy

    assert libraries["numpy"] == numpy.__version__
