"""Triton repositories without a server: layout, Triton's protobuf validation, engines, refusals (torch-free)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fcn_deploy.core.card import ModelCard, OutputSpec
from fcn_deploy.core.errors import FcnDeployError

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient not installed: pip install '.[serve]'")

from fcn_deploy.serving.repository import TritonOptions, package_triton  # noqa: E402
from fcn_deploy.serving.triton_config import parse_pbtxt, validate_pbtxt  # noqa: E402

CLASSES = 5


def tiny_onnx(path: Path, probs: bool = False, static_hw: tuple[int, int] | None = None, seed: int = 0) -> Path:
    """A real, small segmentation graph with an fcn-deploy card: Conv 3->5 (3x3) -> ArgMax -> int32 labels
    [N, H, W] (and Softmax probs [N, 5, H, W]); random weights, so class maps are not trivial."""
    rng = np.random.default_rng(seed)
    w = helper.make_tensor("w", TensorProto.FLOAT, [CLASSES, 3, 3, 3], rng.normal(size=(CLASSES, 3, 3, 3)).ravel())
    h, wd = static_hw if static_hw else ("height", "width")
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["scores"], pads=[1, 1, 1, 1]),
        helper.make_node("ArgMax", ["scores"], ["am"], axis=1, keepdims=0),
        helper.make_node("Cast", ["am"], ["labels"], to=TensorProto.INT32),
    ]
    outputs = [helper.make_tensor_value_info("labels", TensorProto.INT32, ["batch", h, wd])]
    specs = [OutputSpec("labels", "labels")]
    if probs:
        nodes.append(helper.make_node("Softmax", ["scores"], ["probs"], axis=1))
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", CLASSES, h, wd]))
        specs.append(OutputSpec("probs", "probs"))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, h, wd])], outputs, [w]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    card = ModelCard.default("fcn8s", CLASSES, outputs=tuple(specs), opt_shape=(48, 64),
                             class_names=tuple(f"c{i}" for i in range(CLASSES)))  # fmt: skip
    card.attach(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_onnx_repository_layout_and_configs(tmp_path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx", probs=True)
    repo = package_triton([model], tmp_path / "repo", TritonOptions(serve_sizes=((48, 64), (96, 128))))
    assert sorted(p.name for p in repo.iterdir()) == ["tiny", "tiny_ensemble", "tiny_preprocess"]
    assert (repo / "tiny" / "1" / "model.onnx").read_bytes() == model.read_bytes()
    c = parse_pbtxt((repo / "tiny" / "config.pbtxt").read_text(), "tiny")
    assert c.platform == "onnxruntime_onnx" and c.max_batch_size == 8
    assert [(i.name, list(i.dims)) for i in c.input] == [("image", [3, -1, -1])]
    assert [(o.name, list(o.dims)) for o in c.output] == [("labels", [-1, -1]), ("probs", [CLASSES, -1, -1])]
    assert list(c.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert [(g.kind, g.count) for g in c.instance_group] == [(1, 1)]  # KIND_GPU
    assert [list(w.inputs["image"].dims) for w in c.model_warmup] == [[3, 48, 64], [3, 96, 128]]
    assert json.loads(c.parameters["classes"].string_value) == [f"c{i}" for i in range(CLASSES)]
    assert len(json.loads(c.parameters["palette"].string_value)) == CLASSES
    assert ModelCard.from_json(c.parameters["fcn_deploy_card"].string_value).num_classes == CLASSES
    assert (repo / "tiny" / "labels.txt").read_text().split() == [f"c{i}" for i in range(CLASSES)]
    e = parse_pbtxt((repo / "tiny_ensemble" / "config.pbtxt").read_text(), "ens")
    assert e.platform == "ensemble" and [s.model_name for s in e.ensemble_scheduling.step] == [
        "tiny_preprocess", "tiny"]  # fmt: skip
    pre = repo / "tiny_preprocess" / "1"
    assert (pre / "model.py").is_file() and (pre / "fcn_deploy" / "core" / "preprocess.py").is_file()
    assert not (pre / "fcn_deploy" / "training").exists()
    assert not list(tmp_path.glob(".repo.*"))  # the temp folder was renamed into place


def test_python_backend_repository_ships_the_ort_backend(tmp_path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    repo = package_triton([model], tmp_path / "repo",
                          TritonOptions(backend="python", with_preprocess=False, name="seg", max_batch_size=4))  # fmt: skip
    assert sorted(p.name for p in repo.iterdir()) == ["seg"]
    c = parse_pbtxt((repo / "seg" / "config.pbtxt").read_text(), "seg")
    assert c.backend == "python" and not c.platform and c.instance_group[0].kind == 2  # KIND_CPU
    assert list(c.dynamic_batching.preferred_batch_size) == [2, 4]
    assert (repo / "seg" / "1" / "fcn_deploy" / "runtime" / "ort_backend.py").is_file()


def test_static_graph_keeps_its_dims_and_refuses_other_warmup_sizes(tmp_path) -> None:
    model = tiny_onnx(tmp_path / "s.onnx", static_hw=(32, 40))
    repo = package_triton([model], tmp_path / "repo", TritonOptions(with_preprocess=False, serve_sizes=((32, 40),)))
    c = parse_pbtxt((repo / "s" / "config.pbtxt").read_text(), "s")
    assert list(c.input[0].dims) == [3, 32, 40] and list(c.output[0].dims) == [32, 40]
    with pytest.raises(FcnDeployError, match="takes only 32x40"):
        package_triton([model], tmp_path / "r2", TritonOptions(serve_sizes=((48, 64),)))
    assert not (tmp_path / "r2").exists() and not list(tmp_path.glob(".r2.*"))


@pytest.mark.parametrize(
    "text, message",
    [
        ('name: "m" platform: "onnxruntime_onnx" max_batch_size: 4 colour: 3', "colour"),  # unknown field
        ('name: "m" platform: "onnxruntime_onnx" max_batch_size: 2 input [{name: "x" data_type: TYPE_FP32 '
         'dims: [3,-1,-1]}] output [{name: "y" data_type: TYPE_INT32 dims: [-1,-1]}] '
         'dynamic_batching { preferred_batch_size: [4] }', "preferred_batch_size"),
        ('name: "m" platform: "tensorrt_plans" input [{name: "x" data_type: TYPE_FP32 dims: [3]}] '
         'output [{name: "y" data_type: TYPE_FP32 dims: [3]}]', "platform"),
        ('name: "m" backend: "python" max_batch_size: 1 input [{name: "x" data_type: TYPE_FP32 dims: [3,-1,-1]}] '
         'output [{name: "y" data_type: TYPE_FP32 dims: [3]}] model_warmup [{name: "w" batch_size: 1 '
         'inputs {key: "x" value {data_type: TYPE_FP32 dims: [3,-1,-1] zero_data: true}}}]', "concrete"),
    ],
)  # fmt: skip
def test_validation_refuses_what_triton_refuses(text, message) -> None:
    with pytest.raises(FcnDeployError, match=message):
        validate_pbtxt(text, "config.pbtxt")


def _fake_engine(tmp_path: Path, name: str, cc: tuple[int, int], max_batch: int, card: ModelCard) -> Path:
    """An engine file plus a real manifest: packaging copies the plan and reads the manifest, it never
    deserializes the plan, so the plan bytes need not be a TensorRT plan here."""
    from fcn_deploy.core.atomic import sha256_file, write_bytes
    from fcn_deploy.engine.manifest import EngineManifest, write_manifest

    path = tmp_path / f"{name}.engine"
    write_bytes(path, f"plan for sm{cc[0]}{cc[1]}".encode())
    write_manifest(path, EngineManifest(
        engine_sha256=sha256_file(path), engine_bytes=path.stat().st_size, onnx_sha256="0" * 64,
        onnx_file="tiny.onnx", tensorrt_version="10.16.0", gpu_name="test", compute_capability=cc,
        precision="fp16", profile={"input_name": "image", "batch": [1, 2, max_batch], "min_shape": [32, 32],
                                   "opt_shape": [48, 64], "max_shape": [96, 128]},
        model_card=card.to_dict(),
        io_tensors=[{"name": "image", "mode": "input", "dtype": "FLOAT", "shape": [-1, 3, -1, -1]},
                    {"name": "labels", "mode": "output", "dtype": "INT32", "shape": [-1, -1, -1]}],
    ))  # fmt: skip
    return path


def test_tensorrt_plans_for_several_gpus_and_the_profile_batch_limit(tmp_path) -> None:
    card = ModelCard.default("fcn8s", CLASSES, opt_shape=(48, 64), min_shape=(32, 32), max_shape=(96, 128))
    orin = _fake_engine(tmp_path, "orin", (8, 7), 4, card)
    ada = _fake_engine(tmp_path, "ada", (8, 9), 8, card)
    with pytest.raises(FcnDeployError, match="at most batch 4"):
        package_triton([orin, ada], tmp_path / "repo", TritonOptions(max_batch_size=8))
    repo = package_triton([orin, ada], tmp_path / "repo", TritonOptions(max_batch_size=4, name="fcn"))
    c = parse_pbtxt((repo / "fcn" / "config.pbtxt").read_text(), "fcn")
    assert c.platform == "tensorrt_plan" and c.max_batch_size == 4
    assert dict(c.cc_model_filenames) == {"8.7": "model_sm87.plan", "8.9": "model_sm89.plan"}
    assert (repo / "fcn" / "1" / "model_sm87.plan").read_bytes() == orin.read_bytes()
    one = package_triton([orin], tmp_path / "one", TritonOptions(max_batch_size=4, with_preprocess=False))
    assert (one / "orin" / "1" / "model.plan").is_file()
    assert not parse_pbtxt((one / "orin" / "config.pbtxt").read_text(), "orin").cc_model_filenames
    orin.write_bytes(b"tampered")
    with pytest.raises(FcnDeployError, match="does not match its manifest"):
        package_triton([orin], tmp_path / "bad", TritonOptions(max_batch_size=4))


def test_refuses_to_overwrite_and_replaces_with_force(tmp_path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    repo = package_triton([model], tmp_path / "repo", TritonOptions(with_preprocess=False))
    (repo / "stale").mkdir()
    with pytest.raises(FcnDeployError, match="--force"):
        package_triton([model], repo, TritonOptions())
    package_triton([model], repo, TritonOptions(), force=True)
    assert sorted(p.name for p in repo.iterdir()) == ["tiny", "tiny_ensemble", "tiny_preprocess"]
    with pytest.raises(FcnDeployError, match="holds the input"):
        package_triton([model], tmp_path, TritonOptions(), force=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_package_one_line_errors(tmp_path) -> None:
    from click.testing import CliRunner

    from fcn_deploy.cli import main

    model = tiny_onnx(tmp_path / "tiny.onnx")
    runner = CliRunner()
    ok = runner.invoke(main, ["package", str(model), "--format", "triton", "--output", str(tmp_path / "r"),
                              "--preferred-batch-sizes", "4", "--max-batch-size", "4"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    c = parse_pbtxt((tmp_path / "r" / "tiny" / "config.pbtxt").read_text(), "tiny")
    assert list(c.dynamic_batching.preferred_batch_size) == [4]
    bad = runner.invoke(main, ["package", str(model), "-o", str(tmp_path / "r2"), "--preferred-batch-sizes", "16"])
    assert bad.exit_code == 1 and "Error: --preferred-batch-sizes [16]" in bad.output and "Traceback" not in bad.output


def test_no_server_anywhere_is_a_missing_dependency(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    import fcn_deploy.serving.server as server
    from fcn_deploy.cli import main
    from fcn_deploy.core.errors import MissingDependencyError

    monkeypatch.setattr(server.shutil, "which", lambda name: None)
    monkeypatch.setattr(server.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match="nvidia-pytriton"):
        server.find_server()
    (tmp_path / "repo").mkdir()
    r = CliRunner().invoke(main, ["serve", str(tmp_path / "repo")])
    assert r.exit_code == 3 and "nvidia-pytriton" in r.output and "Traceback" not in r.output
