"""`fcn-deploy doctor`: what this machine can run (TensorRT, CUDA, ONNX Runtime, PyTorch, OpenCV, DLA) and the fix."""

from __future__ import annotations

import click


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def command(as_json: bool) -> None:
    """Check this machine: platform, driver, CUDA, TensorRT, cuda-python, ONNX Runtime, PyTorch, OpenCV, DLA;
    then for each command whether it can run here, and the exact fix when it cannot."""
    import json

    from fcn_deploy.engine.doctor import diagnose, format_text

    report = diagnose()
    click.echo(json.dumps(report.to_dict(), indent=1) if as_json else format_text(report))
