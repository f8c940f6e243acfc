"""A command that writes over a file made before says so, in one line from the chain (`replacing PATH (why)`)."""

from __future__ import annotations

from click.testing import CliRunner
from test_calibration import tiny_fcn, write_images

from fcn_deploy.chain.artifact import replacements_only
from fcn_deploy.chain.lowered import LoweredOnnx
from fcn_deploy.cli import main


def test_lowering_over_a_file_from_another_parent_says_replacing(tmp_path):
    calib = write_images(tmp_path / "calib", 4)
    a, b = tiny_fcn(tmp_path / "a.onnx", seed=0), tiny_fcn(tmp_path / "b.onnx", seed=1)
    out = tmp_path / "m.int8.onnx"
    options = {"calib_data": calib, "num_images": 4, "eval_images": 2, "latency_runs": 0}
    lines: list[str] = []
    LoweredOnnx(a, "int8", out, target="onnxruntime", calibration=options, say=lines.append)()
    assert not any("replacing" in s for s in lines)
    lines.clear()
    LoweredOnnx(b, "int8", out, target="onnxruntime", calibration=options, say=lines.append)()
    assert f"  replacing {out} (lowered from another parent)" in lines
    lines.clear()
    assert LoweredOnnx(b, "int8", out, target="onnxruntime", calibration=options, say=lines.append)().reused
    assert not any("replacing" in s for s in lines)


def test_replacements_only_passes_just_the_replacing_lines():
    seen: list[str] = []
    say = replacements_only(seen.append)
    say("  exporting x -> y")
    say("  replacing y (an earlier export)")
    assert seen == ["replacing y (an earlier export)"]


def test_export_over_an_earlier_export_says_so(tmp_path):
    out = tmp_path / "m.onnx"
    args = ["export", "--variant", "fcn8s", "--width", "0.0625", "--num-classes", "3", "--padding", "same",
            "--no-simplify", "-o", str(out)]  # fmt: skip
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0 and "replacing" not in first.output
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0 and f"replacing {out} (an earlier export)" in second.output


def test_quantize_over_a_lowering_of_another_model_says_so(tmp_path):
    calib = write_images(tmp_path / "calib", 4)
    a, b = tiny_fcn(tmp_path / "a.onnx", seed=0), tiny_fcn(tmp_path / "b.onnx", seed=1)
    out = tmp_path / "m.int8.onnx"

    def args(model):
        return ["quantize", str(model), "--int8", "--target", "onnxruntime", "--calib-data", str(calib),
                "--num-images", "4", "--eval-images", "2", "-o", str(out)]  # fmt: skip

    first = CliRunner().invoke(main, args(a))
    assert first.exit_code == 0, first.output
    assert "replacing" not in first.output
    second = CliRunner().invoke(main, args(b))
    assert second.exit_code == 0, second.output
    assert f"replacing {out} (lowered from another parent)" in second.output
