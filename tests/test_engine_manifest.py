"""Engine manifests: written atomically after the plan, and checked before any plan reaches TensorRT.

The engines here are dummy byte files with hand-written manifests: the check never deserializes anything, so it
runs (and refuses) on any CPU.
"""

from __future__ import annotations

import json
import os

import pytest

from fcn_deploy.core.atomic import sha256_file
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.engine.manifest import (
    EngineManifest,
    StaleEngineError,
    check_engine,
    manifest_path,
    read_manifest,
    write_manifest,
)

REBUILD = "fcn-deploy build-engine m.onnx --fp16 --output model.engine"


@pytest.fixture
def built(tmp_path):
    """A dummy plan + a hand-written manifest as build-engine would write them (TRT 10.3 on Orin)."""
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"not really onnx, only hashed")
    engine = tmp_path / "model.engine"
    engine.write_bytes(bytes(range(256)) * 8)
    m = EngineManifest(
        engine_sha256=sha256_file(engine),
        engine_bytes=engine.stat().st_size,
        onnx_sha256=sha256_file(onnx_file),
        onnx_file="m.onnx",
        tensorrt_version="10.3.0.30",
        gpu_name="Orin",
        compute_capability=(8, 7),
        precision="fp16",
        profile={
            "input_name": "image",
            "batch": [1, 1, 1],
            "min_shape": [32, 32],
            "opt_shape": [360, 480],
            "max_shape": [720, 960],
        },
        model_card=ModelCard.default("fcn8s", 3).to_dict(),
        rebuild_command=REBUILD,
    )
    write_manifest(engine, m)
    return engine, onnx_file, m


def ok(engine, **kw):
    args = dict(tensorrt_version="10.3.0.30", compute_capability=(8, 7))
    args.update(kw)
    return check_engine(engine, **args)


def test_matching_engine_passes_and_round_trips(built):
    engine, onnx_file, m = built
    assert manifest_path(engine).name == "model.engine.json"
    assert ok(engine, onnx_path=onnx_file) == m
    assert read_manifest(engine) == m
    assert ModelCard.from_dict(read_manifest(engine).model_card) == ModelCard.default("fcn8s", 3)


def test_tensorrt_version_mismatch_is_named(built):
    engine, _, _ = built
    with pytest.raises(
        StaleEngineError, match=r"built with TensorRT 10\.3\.0\.30, running 10\.13\.3\.9"
    ) as e:
        ok(engine, tensorrt_version="10.13.3.9")
    assert REBUILD in str(e.value)


def test_compute_capability_mismatch_is_named(built):
    engine, _, _ = built
    with pytest.raises(StaleEngineError, match="GPU sm_87 vs sm_90") as e:
        ok(engine, compute_capability=(9, 0))
    assert REBUILD in str(e.value)


def test_flipped_byte_is_refused(built):
    engine, _, _ = built
    data = bytearray(engine.read_bytes())
    data[100] ^= 0x01
    engine.write_bytes(bytes(data))
    with pytest.raises(StaleEngineError, match="checksum mismatch.*tampered"):
        ok(engine)


def test_truncated_engine_is_refused(built):
    engine, _, _ = built
    engine.write_bytes(engine.read_bytes()[:1000])
    with pytest.raises(StaleEngineError, match="checksum mismatch.*1000 bytes, manifest says 2048"):
        ok(engine)


def test_zero_byte_engine_is_refused_even_with_trust(built):
    engine, _, _ = built
    engine.write_bytes(b"")
    for trust in (False, True):
        with pytest.raises(StaleEngineError, match="empty"):
            ok(engine, trust=trust)


def test_missing_manifest_means_unknown_provenance(built):
    engine, _, _ = built
    manifest_path(engine).unlink()
    with pytest.raises(StaleEngineError, match="unknown provenance.*--trust"):
        ok(engine)
    assert ok(engine, trust=True) is None  # a hand-built plan, on the user's word


def test_trust_skips_the_checks(built):
    engine, _, _ = built
    assert ok(engine, tensorrt_version="11.4.0.106", compute_capability=(9, 0), trust=True) is None


def test_changed_onnx_is_refused(built):
    engine, onnx_file, _ = built
    onnx_file.write_bytes(b"re-exported")
    with pytest.raises(StaleEngineError, match="m.onnx changed after the engine was built"):
        ok(engine, onnx_path=onnx_file)


def test_version_compatible_engine_loads_on_newer_runtime_only(built, tmp_path):
    engine, _, m = built
    import dataclasses

    write_manifest(engine, dataclasses.replace(m, build_options={"version_compatible": True}))
    assert ok(engine, tensorrt_version="10.7.0.23")
    assert ok(engine, tensorrt_version="11.4.0.106")  # 10 -> 11 is the supported cross-major pair
    with pytest.raises(StaleEngineError, match="running 10.2.0"):
        ok(engine, tensorrt_version="10.2.0")


def test_missing_engine_file(tmp_path):
    with pytest.raises(FcnDeployError, match="no such engine file"):
        ok(tmp_path / "nope.engine")


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "not valid JSON"),
        ("[]", "not an fcn-deploy engine manifest"),
        ('{"format": "fcn-deploy-engine-manifest", "schema_version": 99}', "schema 99"),
        ('{"format": "fcn-deploy-engine-manifest", "schema_version": 1}', "malformed engine manifest"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
    ],
)
def test_malformed_manifest_is_a_user_error(built, content, match):
    engine, _, _ = built
    path = manifest_path(engine)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(FcnDeployError, match=match):
        ok(engine)


def test_manifest_write_is_atomic(built, monkeypatch):
    engine, _, m = built
    before = manifest_path(engine).read_bytes()

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises((OSError, FcnDeployError), match="disk full"):  # core.atomic: one line naming the file
        write_manifest(engine, m)
    assert manifest_path(engine).read_bytes() == before
    assert not [p for p in engine.parent.iterdir() if ".tmp" in p.name]


def test_manifest_is_plain_sorted_json(built):
    engine, _, _ = built
    data = json.loads(manifest_path(engine).read_text())
    for key in (
        "engine_sha256",
        "onnx_sha256",
        "tensorrt_version",
        "gpu_name",
        "compute_capability",
        "precision",
        "profile",
        "dla_core",
        "build_options",
        "model_card",
        "fcn_deploy_version",
        "provenance",
    ):
        assert key in data
    assert data["compute_capability"] == [8, 7]
