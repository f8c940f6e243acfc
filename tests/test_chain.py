"""The artifact chain: `report` and `build-engine` reach the engine builder through the one EngineFromOnnx seam
with the same keyword arguments (those engine_from_onnx accepts), each step reuses its output only when the
parent's sha256 and the options match, and an interrupted build leaves nothing at the destination."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image
from test_engine_cli import tiny_fcn_onnx

from fcn_deploy.chain import engine as chain_engine
from fcn_deploy.chain.engine import EngineFromOnnx
from fcn_deploy.chain.lowered import LoweredOnnx
from fcn_deploy.chain.onnx import OnnxFromCheckpoint
from fcn_deploy.cli import main
from fcn_deploy.core.atomic import sha256_file, write_bytes
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.onnx_io import load_onnx
from fcn_deploy.engine.build import BuildOptions, BuildResult, engine_from_onnx
from fcn_deploy.engine.manifest import EngineManifest, manifest_path, read_manifest, write_manifest
from fcn_deploy.engine.profile_shapes import Profile
from fcn_deploy.report.inputs import ReportConfig
from fcn_deploy.report.run import build_report

PLATFORM = ("10.3.0", (8, 7))


class RecordingBuilder:
    """Stands in for TensorRT at the chain's seam: records each call and the step that made it, writes a fake
    plan and a real manifest (as engine_from_onnx does), or stops between the two when `interrupt` is set."""

    def __init__(self, interrupt: bool = False) -> None:
        self.calls: list[tuple[tuple, dict, object]] = []
        self.interrupt = interrupt

    def unavailable(self):
        return None

    def platform(self):
        return PLATFORM

    def build(self, onnx_path, output, options, **kw) -> BuildResult:
        step = inspect.currentframe().f_back.f_locals.get("self")
        self.calls.append(((onnx_path, output, options), kw, step))
        write_bytes(output, b"fake plan for " + Path(onnx_path).name.encode())
        if self.interrupt:
            raise KeyboardInterrupt
        manifest = EngineManifest(
            engine_sha256=sha256_file(output), engine_bytes=Path(output).stat().st_size,
            onnx_sha256=sha256_file(kw["source_onnx"]), onnx_file=Path(kw["source_onnx"]).name,
            tensorrt_version=PLATFORM[0], gpu_name="recorder", compute_capability=PLATFORM[1],
            precision=kw["precision"], profile=options.profile.to_dict(), build_options=options.to_dict(),
            provenance=kw["provenance"], model_card=kw["card"].to_dict(), rebuild_command=kw["rebuild_command"],
        )  # fmt: skip
        return BuildResult(Path(output), write_manifest(output, manifest), manifest, ())


@pytest.fixture
def model(tmp_path):
    return tiny_fcn_onnx(tmp_path / "m.onnx")


def test_report_and_build_engine_reach_the_builder_through_one_seam(model, tmp_path, monkeypatch):
    recorder = RecordingBuilder()
    monkeypatch.setattr(chain_engine, "TENSORRT", recorder)
    r = CliRunner().invoke(main, ["build-engine", str(model), "--output", str(tmp_path / "cli.engine")])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and (tmp_path / "cli.engine").is_file()
    result = build_report(ReportConfig(
        output=tmp_path / "report", dataset="synthetic", onnx=model, precisions=("fp32",), backends=("tensorrt",),
        sizes=((32, 32),), dataset_options={"num_classes": 3, "size": [32, 32], "length": 2},
        latency_warmup_s=0.0, latency_iterations=2, num_samples=1,
    ), echo=lambda s: None)  # fmt: skip
    assert len(recorder.calls) == 2
    (cli_args, cli_kw, cli_step), (rep_args, rep_kw, rep_step) = recorder.calls
    assert type(cli_step) is EngineFromOnnx and type(rep_step) is EngineFromOnnx
    assert set(cli_kw) == set(rep_kw)
    for args, kw in ((cli_args, cli_kw), (rep_args, rep_kw)):
        inspect.signature(engine_from_onnx).bind(*args, **kw)  # the real builder takes exactly these
        assert kw["source_onnx"] == model and kw["precision"] == "fp32"
    assert rep_args[1] == tmp_path / "report" / "models" / "model.fp32.engine"
    row = next(r for r in result.rows if r["backend"] == "tensorrt")
    assert row["status"] == "skipped" and "TensorRT" in row["reason"]  # built (by the recorder), not runnable here


def relabel(model: Path) -> None:
    """The same graph with other class names: another parent sha256."""
    m = load_onnx(model)
    ModelCard.from_onnx(m).replace(class_names=("x", "y", "z")).attach(m)
    onnx.save(m, str(model))


def profile(opt=(48, 64)) -> BuildOptions:
    return BuildOptions(Profile("image", (1, 1, 1), (32, 32), opt, (96, 128)))


def test_engine_is_reused_only_for_the_same_parent_and_options(model, tmp_path):
    recorder = RecordingBuilder()
    out = tmp_path / "m.engine"

    def step(options=None):
        return EngineFromOnnx(model, out, options or profile(), builder=recorder, say=lambda s: None)

    assert not step()().reused and len(recorder.calls) == 1
    assert step()().reused and len(recorder.calls) == 1
    assert not step(profile((64, 64)))().reused and len(recorder.calls) == 2
    relabel(model)
    assert not step(profile((64, 64)))().reused and len(recorder.calls) == 3
    assert read_manifest(out).onnx_sha256 == sha256_file(model)


def test_an_interrupted_build_leaves_nothing_at_the_destination(model, tmp_path):
    out = tmp_path / "m.engine"
    with pytest.raises(KeyboardInterrupt):
        EngineFromOnnx(model, out, profile(), builder=RecordingBuilder(interrupt=True), say=lambda s: None)()
    assert not out.exists() and not manifest_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def write_images(folder: Path, n: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_lowered_onnx_is_reused_only_for_the_same_parent_and_options(model, tmp_path):
    images = write_images(tmp_path / "imgs", 4)
    out = tmp_path / "m.fp16.onnx"

    def step(num_images=3):
        return LoweredOnnx(model, "fp16", out, calibration={"calib_data": images, "num_images": num_images},
                           say=lambda s: None)  # fmt: skip

    first = step()()
    assert not first.reused and first.result is not None
    stamp = out.stat().st_mtime_ns
    assert step()().reused and out.stat().st_mtime_ns == stamp
    assert not step(num_images=2)().reused  # another option
    assert step(num_images=2)().reused
    relabel(model)
    assert not step(num_images=2)().reused  # another parent
    assert ModelCard.from_onnx(load_onnx(out)).provenance["lowering"]["parent_onnx_sha256"] == sha256_file(model)


def test_a_transient_lowering_lives_only_for_the_build(model, tmp_path):
    images = write_images(tmp_path / "imgs", 3)
    recorder = RecordingBuilder()
    lowered = LoweredOnnx(model, "fp16", None, calibration={"calib_data": images, "num_images": 2},
                          say=lambda s: None)  # fmt: skip
    made = EngineFromOnnx(lowered, tmp_path / "m.engine", profile(), builder=recorder, say=lambda s: None)()
    (args, kw, _), = recorder.calls
    assert kw["source_onnx"] == model and kw["precision"] == "fp16" and not Path(args[0]).exists()
    assert "--fp16" in kw["rebuild_command"] and "--num-images=2" in kw["rebuild_command"]
    assert made.path.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "m.engine",
                                                                                    "m.engine.json", "m.onnx"]


def test_onnx_is_reused_only_for_the_same_checkpoint_and_options(tmp_path):
    from test_report import SIZE, tiny_checkpoint

    from fcn_deploy.export.options import ExportOptions

    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "model.onnx"

    def step(opset=17):
        options = ExportOptions(opset=opset, opt_shape=SIZE, check_sizes=(SIZE,))
        return OnnxFromCheckpoint(ckpt, out, options, say=lambda s: None)

    assert not step()().reused
    assert step()().reused
    assert not step(opset=18)().reused  # another option
    assert ModelCard.from_onnx(load_onnx(out)).provenance["opset"] == 18
    from fcn_deploy.training.checkpoint import model_from_checkpoint, save_checkpoint

    model, card, _ = model_from_checkpoint(ckpt)
    save_checkpoint(ckpt, model, card, epoch=7)  # the same weights, another file: another parent sha256
    assert not step(opset=18)().reused
    assert ModelCard.from_onnx(load_onnx(out)).checkpoint_sha256 == sha256_file(ckpt)
