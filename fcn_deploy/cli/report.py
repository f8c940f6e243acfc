"""`fcn-deploy report`: accuracy vs latency of every backend x precision x size on the same labelled images."""

from __future__ import annotations

from pathlib import Path

import click

from fcn_deploy.core.datasets import DATASETS
from fcn_deploy.report.inputs import BACKENDS, DEVICES, PRECISIONS, ReportConfig

DEFAULTS = ReportConfig(output=Path("report"), dataset="synthetic")  # the library's defaults, shown in --help


@click.command("report")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Training checkpoint (.pt): exported for you; "
              "also gives the PyTorch eager reference row.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), help="FP32 ONNX from `fcn-deploy export`.")
@click.option("--dataset", type=click.Choice(DATASETS), required=True)
@click.option("--data-root", type=click.Path(file_okay=False), help="Dataset folder (not needed for synthetic).")
@click.option("--split", default=DEFAULTS.split, show_default=True)
@click.option("--max-images", type=int, help="Evaluate the first N images of the split.")
@click.option("--precisions", default=",".join(PRECISIONS), show_default=True,
              help="Any of fp32,fp16,int8,bf16 (bf16: OpenVINO rows, on CPUs with AVX512-BF16/AMX).")
@click.option("--backends", default=",".join(DEFAULTS.backends), show_default=True,
              help=f"auto (all but openvino), or a list of {','.join(BACKENDS)}; TensorRT rows are skipped with "
              "a reason when TensorRT or a GPU is missing.")
@click.option("--sizes", help="Network input sizes HxW,... [default: the model card's opt shape].")
@click.option("--calib-images", type=int, default=DEFAULTS.calib_images, show_default=True,
              help="Calibration images for INT8/FP16 (from the train split).")
@click.option("--latency-s", type=float, default=DEFAULTS.latency_duration_s, show_default=True,
              help="Timing seconds per row.")
@click.option("--device", type=click.Choice(DEVICES), default=DEFAULTS.device, show_default=True,
              help="Device of the PyTorch and ONNX Runtime rows (TensorRT rows always run on the GPU).")
@click.option("--auto", is_flag=True, help="INT8 rows use `quantize --auto`'s measured FP32-group plan.")
@click.option("--max-drop", type=float, default=DEFAULTS.max_drop, show_default=True, help="--auto budget (points).")
@click.option("--metric", type=click.Choice(("miou", "agreement")), help="--auto metric (default: miou).")
@click.option("--output", type=click.Path(), default="report", show_default=True, help="Report directory.")
def command(checkpoint, onnx_path, dataset, data_root, split, max_images, precisions, backends, sizes,
            calib_images, latency_s, device, auto, max_drop, metric, output) -> None:
    """Build what is missing (export, FP16/INT8, engines), evaluate each row, write report.md/json/csv and plots."""
    from fcn_deploy.core.paths import check_outputs
    from fcn_deploy.core.shapes import parse_hw_list
    from fcn_deploy.report.run import build_report
    from fcn_deploy.report.write import markdown_table

    written = ("report.md", "report.json", "report.csv", "pareto.png", "per_class.png", "samples")
    check_outputs({"--checkpoint": checkpoint, "--onnx": onnx_path, "--data-root": data_root},
                  {f"--output ({name})": Path(output) / name for name in written})  # fmt: skip
    cfg = ReportConfig(
        output=Path(output), dataset=dataset, checkpoint=Path(checkpoint) if checkpoint else None,
        onnx=Path(onnx_path) if onnx_path else None, data_root=data_root, split=split, max_images=max_images,
        precisions=tuple(precisions.split(",")), backends=tuple(backends.split(",")),
        sizes=tuple(parse_hw_list(sizes, "--sizes")) if sizes else None, calib_images=calib_images,
        latency_duration_s=latency_s, device=device, auto=auto, max_drop=max_drop, metric=metric,
    )
    result = build_report(cfg)
    click.echo(markdown_table(result.rows))
    click.echo(f"\nreport: {result.output / 'report.md'} (also report.json, report.csv, pareto.png, per_class.png, "
               "samples/)")
