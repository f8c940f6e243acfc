"""CLI contract: lazy imports, help for every command, model-info output and one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fcn_deploy.cli import COMMANDS, main

HEAVY = ("torch", "onnx", "onnxruntime", "tensorrt", "cv2")


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from fcn_deploy.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(main.get_command(None, name).help or "") > 10


def test_model_info_json_for_a_narrow_same_variant() -> None:
    result = CliRunner().invoke(
        main, ["model-info", "--variant", "fcn8s", "--padding", "same", "--width", "0.125", "--input-size", "37x53",
               "--num-classes", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["output_size"] == info["input_size"] == [37, 53]
    assert info["crop_offsets"] == {"score_pool4": 0, "score_pool3": 0, "final": 0}
    assert info["params_total"] > info["params_learned"] > 0 and info["macs"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model-info", "--input-size", "0x5"], "height and width must be positive"),
        (["model-info", "--input-size", "big"], "expected HEIGHTxWIDTH"),
        (["model-info", "--variant", "fcn4s"], "is not one of"),
        (["model-info", "--width", "-1"], "--width must be in"),
    ],
)
def test_model_info_bad_input_is_one_line(args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "fcn_deploy", *args], capture_output=True, text=True)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr
