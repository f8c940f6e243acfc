"""`fcn-deploy quantize` through click: success path and one-line errors without tracebacks or partial files."""

from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner
from test_calibration import tiny_fcn, write_images

from fcn_deploy.cli import main


def invoke(*args):
    return CliRunner().invoke(main, ["quantize", *map(str, args)])


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.startswith("Error")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], result.output


@pytest.fixture
def model(tmp_path):
    return tiny_fcn(tmp_path / "m.onnx")


def test_int8_cli_writes_model_and_summary(model, tmp_path):
    calib = write_images(tmp_path / "calib", 6)
    r = invoke(model, "--int8", "--calib-data", calib, "--num-images", 4, "--method", "percentile",
               "--calib-shapes", "32x48,16x32", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["num_images"] == 4 and summary["held_out"] and summary["eval_images"] == 2
    assert summary["shapes"] == [[32, 48], [16, 32]]
    assert onnx.load(str(tmp_path / "m.int8.onnx")).graph.node
    assert (tmp_path / "m.int8.json").is_file()


def test_fp16_cli_text_output(model, tmp_path):
    calib = write_images(tmp_path / "calib", 3)
    r = invoke(model, "--fp16", "--calib-data", calib, "--output", tmp_path / "half.onnx")
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "agreement" in r.output and (tmp_path / "half.json").is_file()


def test_cli_needs_precision_and_calibration_data(model):
    assert_one_line_error(invoke(model, "--calib-data", "x"), "--int8 or --fp16")
    assert_one_line_error(invoke(model, "--int8"), "needs calibration images")


def test_cli_empty_folder(model, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke(model, "--int8", "--calib-data", tmp_path / "empty"), "no images")
    assert not (tmp_path / "m.int8.onnx").exists()


def test_cli_corrupt_only_folder(model, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"\xff\xd8 truncated")
    assert_one_line_error(invoke(model, "--int8", "--calib-data", bad), "all corrupt")
    assert not (tmp_path / "m.int8.onnx").exists()


def test_cli_already_quantized_and_cardless(tmp_path):
    calib = write_images(tmp_path / "calib", 3)
    m = tiny_fcn(tmp_path / "m.onnx")
    assert invoke(m, "--int8", "--calib-data", calib).exit_code == 0
    assert_one_line_error(invoke(tmp_path / "m.int8.onnx", "--int8", "--calib-data", calib), "already lowered")
    bare = tiny_fcn(tmp_path / "bare.onnx", card=False)
    assert_one_line_error(invoke(bare, "--int8", "--calib-data", calib), "--mean and --std")
    assert_one_line_error(invoke(bare, "--int8", "--calib-data", calib, "--mean", "0.5,0.5", "--std", "1,1,1"),
                          "three comma-separated")
    ok = invoke(bare, "--int8", "--calib-data", calib, "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2")
    assert ok.exit_code == 0, ok.output


def test_cli_bad_exclude_shape_and_missing_model(model, tmp_path):
    calib = write_images(tmp_path / "calib", 2)
    assert_one_line_error(invoke(model, "--int8", "--calib-data", calib, "--exclude", "Gemm"), "--exclude 'Gemm'")
    assert_one_line_error(invoke(model, "--int8", "--calib-data", calib, "--calib-shapes", "32by48"), "HEIGHTxWIDTH")
    assert_one_line_error(invoke(tmp_path / "nope.onnx", "--int8", "--calib-data", calib), "no such ONNX file")
    assert not list(tmp_path.glob("*.int8.*"))


def test_cli_stale_cache(model, tmp_path):
    calib = write_images(tmp_path / "calib", 3)
    cache = tmp_path / "c.json"
    assert invoke(model, "--int8", "--calib-data", calib, "--cache", cache).exit_code == 0
    r = invoke(model, "--int8", "--calib-data", calib, "--cache", cache, "--num-images", 2, "-o", tmp_path / "x.onnx")
    assert_one_line_error(r, "stale calibration cache", "num_images")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_dataset_with_other_classes(model, tmp_path):
    """A 3-class model calibrated on the 4-class synthetic dataset: refused before calibrating (the held-out
    scoring would otherwise fail deep inside the metric)."""
    r = invoke(model, "--int8", "--calib-dataset", "synthetic:train", "--num-images", 4)
    assert_one_line_error(r, "4 classes", "predicts 3", "trained on")
    assert not (tmp_path / "m.int8.onnx").exists()
