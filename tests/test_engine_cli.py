"""`fcn-deploy build-engine` on a machine without TensorRT: input errors first (exit 1/2), then exit 3 with the
fix, never an engine; with --fp16/--int8 --keep-onnx the lowered ONNX is still written (real calibration run)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from fcn_deploy.cli import main
from fcn_deploy.core.card import ModelCard

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_CALIBRATION = importlib.util.find_spec("fcn_deploy.calibration.api") is not None
no_trt = pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here: the exit-3 path cannot happen")


def tiny_fcn_onnx(path: Path, batch="N", card=True) -> Path:
    """Conv 3->3 classes + ArgMax labels, dynamic H/W, with an fcn-deploy model card."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["logits"], pads=[1, 1, 1, 1], name="score"),
        helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0, name="argmax"),
    ]
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, "H", "W"])
    y = helper.make_tensor_value_info("labels", TensorProto.INT64, [batch, "H", "W"])
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], [w, b]), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 9
    if card:
        ModelCard.default("fcn32s", 3, min_shape=(32, 32), opt_shape=(48, 64), max_shape=(96, 128)).attach(
            model
        )
    onnx.save(model, str(path))
    return path


def run(args):
    return CliRunner().invoke(main, ["build-engine", *[str(a) for a in args]], catch_exceptions=False)


def one_line_error(result, code):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def model(tmp_path):
    return tiny_fcn_onnx(tmp_path / "m.onnx")


@no_trt
def test_missing_tensorrt_exits_3_and_writes_nothing(model, tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("fcn-deploy")),
            "build-engine",
            str(model),
            "--output",
            str(tmp_path / "out.engine"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert (
        "TensorRT" in lines[0] and "pip install 'fcn-deploy[tensorrt]'" in lines[0] and "JetPack" in lines[0]
    )
    assert "no engine written" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no engine, no manifest, no temp file


@pytest.mark.parametrize(
    "args,code,match",
    [
        (["--fp16", "--int8"], 2, "exclusive"),
        (["--keep-onnx", "x.onnx"], 2, "--keep-onnx only applies"),
        (["--calib-data", "."], 2, "only applies with --int8 or --fp16"),
        (["--builder-optimization-level", "9"], 2, "0<=x<=5"),
        (["--dla-core", "-1"], 2, "x>=0"),
        (["--min-shape", "400x480", "--opt-shape", "360x480"], 1, "min <= opt <= max"),
        (["--opt-shape", "360by480"], 1, "--opt-shape '360by480'"),
        (["--batch", "4:2:8"], 1, "--batch '4:2:8'"),
        (["--workspace", "lots"], 1, "--workspace 'lots'"),
        (["--output", "{model}"], 2, "must differ from MODEL"),
    ],
)
def test_input_errors_come_before_the_tensorrt_check(model, tmp_path, args, code, match):
    result = run([model, *(a.format(model=model) for a in args)])
    line = one_line_error(result, code)
    assert match in line
    assert "not installed" not in result.output
    assert not list(tmp_path.glob("*.engine*"))


def test_bad_onnx_files_are_refused_before_tensorrt(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert "empty" in one_line_error(run([empty]), 1)
    half = tmp_path / "half.onnx"
    half.write_bytes(tiny_fcn_onnx(tmp_path / "full.onnx").read_bytes()[:150])
    assert "not a valid ONNX model" in one_line_error(run([half]), 1)
    cardless = tiny_fcn_onnx(tmp_path / "cardless.onnx", card=False)
    assert "no fcn-deploy model card" in one_line_error(run([cardless]), 1)
    assert not list(tmp_path.glob("*.engine*"))


def test_static_batch_conflicts_with_batch_option(tmp_path):
    static = tiny_fcn_onnx(tmp_path / "static.onnx", batch=1)
    line = one_line_error(run([static, "--batch", "1:2:4"]), 1)
    assert "axis 0 is fixed at 1" in line


@no_trt
def test_lowering_without_keep_onnx_is_skipped_when_tensorrt_is_missing(model, tmp_path):
    """Calibration is minutes of work: without --keep-onnx there is nothing to keep, so stop at once."""
    images = tmp_path / "imgs"
    images.mkdir()
    result = run([model, "--fp16", "--calib-data", images])
    assert "TensorRT" in one_line_error(result, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "m.onnx"]


@no_trt
@pytest.mark.skipif(
    not HAS_CALIBRATION, reason="fcn_deploy.calibration.api (the precision work) is not in this tree yet"
)
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_keep_onnx_is_written_even_without_tensorrt(model, tmp_path, precision):
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")
    kept = tmp_path / f"kept.{precision}.onnx"
    result = run(
        [
            model,
            f"--{precision}",
            "--calib-data",
            images,
            "--num-images",
            4,
            "--keep-onnx",
            kept,
            "--output",
            tmp_path / "m.engine",
        ]
    )
    line = one_line_error(result, 3)
    assert "no engine written" in line and str(kept) in line
    from fcn_deploy.core.onnx_io import load_onnx
    from fcn_deploy.engine.build import detect_precision

    lowered = load_onnx(kept)
    assert detect_precision(lowered) == precision
    assert ModelCard.from_onnx(lowered).precision == precision
    assert not list(tmp_path.glob("m.engine*"))


def test_help_lists_the_options():
    result = CliRunner().invoke(main, ["build-engine", "--help"])
    assert result.exit_code == 0
    for opt in (
        "--fp16",
        "--int8",
        "--min-shape",
        "--opt-shape",
        "--max-shape",
        "--batch",
        "--workspace",
        "--timing-cache",
        "--dla-core",
        "--builder-optimization-level",
        "--version-compatible",
        "--output",
        "--keep-onnx",
    ):
        assert opt in result.output


def test_trt_backend_imports_neither_torch_nor_tensorrt():
    code = (
        "import sys, fcn_deploy.engine.backend, fcn_deploy.engine.build, fcn_deploy.cli.build_engine; "
        "print(sorted(m for m in ('torch', 'tensorrt', 'pycuda') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@no_trt
def test_trt_backend_without_tensorrt_is_exit_3(tmp_path):
    from fcn_deploy.core.errors import MissingDependencyError
    from fcn_deploy.engine.backend import TrtBackend

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(MissingDependencyError, match="TensorRT"):
        TrtBackend(engine)
