"""`fcn-deploy doctor` on this machine, on the TensorRT contract double, and on Jetson fixture trees
(JetPack 6.2: L4T R36.4.3; JetPack 7.2: dpkg's nvidia-jetpack 7.2.2, with an illustrative R38 release line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from trt_double import ORIN, use_double

from fcn_deploy.cli import main
from fcn_deploy.engine.doctor import commands, detect_platform, diagnose, format_text

JP62_RELEASE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025"
JP72_RELEASE = "# R38 (release), REVISION: 6.0, GCID: 00000000, BOARD: generic, EABI: aarch64, DATE: fixture"
DPKG_JP72 = "Package: nvidia-jetpack\nStatus: install ok installed\nVersion: 7.2.2-b12\n\nPackage: other\nVersion: 1\n"


def jetson_root(tmp_path: Path, release: str, model: str, dpkg: str | None = None) -> Path:
    (tmp_path / "etc").mkdir(parents=True)
    (tmp_path / "etc" / "nv_tegra_release").write_text(release + "\n")
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\0")
    if dpkg:
        (tmp_path / "var" / "lib" / "dpkg").mkdir(parents=True)
        (tmp_path / "var" / "lib" / "dpkg" / "status").write_text(dpkg)
    return tmp_path


def test_jetpack_62_release_string(tmp_path):
    root = jetson_root(tmp_path, JP62_RELEASE, "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super")
    p = detect_platform(root)
    assert p == {"kind": "jetson", "module": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
                 "l4t": "36.4.3", "jetpack": "6.2"}  # fmt: skip


def test_jetpack_72_from_dpkg(tmp_path):
    root = jetson_root(tmp_path, JP72_RELEASE, "NVIDIA Jetson AGX Orin Developer Kit", DPKG_JP72)
    p = detect_platform(root)
    assert p["kind"] == "jetson" and p["jetpack"] == "7.2.2" and p["l4t"] == "38.6.0"


def test_desktop_without_release_files(tmp_path):
    assert detect_platform(tmp_path)["kind"] == "desktop"


def test_jetson_fixes_name_jetpack_packages_and_the_cuda_python_pin(tmp_path):
    root = jetson_root(tmp_path, JP62_RELEASE, "NVIDIA Jetson AGX Orin Developer Kit")
    report = diagnose(root, torch_timeout=120)
    rows = {r["command"]: r for r in commands(report.platform, report.checks)}
    if not report.checks["tensorrt"]["ok"]:
        assert "nvidia-jetpack" in rows["build-engine"]["fix"]
    if not report.checks["cuda"]["ok"]:
        assert "cuda-python>=12.6,<13" in rows["build-engine"]["fix"]  # JetPack 6: CUDA 12 driver
    assert "JetPack 6.2" in format_text(report)


def test_this_machine_text_and_json(tmp_path):
    r = CliRunner().invoke(main, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["platform"]["kind"] in ("desktop", "jetson")
    rows = {row["command"]: row for row in doc["commands"]}
    assert rows["infer --backend onnxruntime --device cpu"]["ok"]  # onnxruntime is installed in CI
    for row in doc["commands"]:
        assert row["ok"] or (row["why"] and row["fix"]), row
    text = CliRunner().invoke(main, ["doctor"]).output
    assert "TensorRT" in text and "build-engine" in text


@pytest.mark.trt_contract
def test_with_tensorrt_and_a_gpu_build_engine_can_run(monkeypatch):
    use_double(monkeypatch, devices=ORIN, version="10.3.0")
    report = diagnose()
    rows = {r["command"]: r for r in report.commands}
    assert rows["build-engine"]["ok"] and rows["infer --backend tensorrt"]["ok"]
    assert report.checks["tensorrt"]["version"] == "10.3.0"
    assert report.checks["dla"]["ok"]  # Orin with TensorRT 10.3
    use_double(monkeypatch, cuda_python="13.0.3", driver=12060)
    rows = {r["command"]: r for r in diagnose().commands}
    assert not rows["build-engine"]["ok"]
    assert "too old for cuda-python 13.0.3" in rows["build-engine"]["why"]
    assert "cuda-python>=12.6,<13" in rows["build-engine"]["fix"]
