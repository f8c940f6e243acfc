"""`fcn-deploy evaluate`: the paper's four metrics and per-class IoU of any model artifact on a dataset split."""

from __future__ import annotations

import json
import math

import click

from fcn_deploy.chain.backends import BACKENDS, PRECISIONS
from fcn_deploy.core.datasets import DATASETS

KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou")


@click.command("evaluate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--dataset", type=click.Choice(DATASETS), help="[default: the dataset the model was trained on]"
)
@click.option(
    "--data-root", type=click.Path(file_okay=False), help="Dataset folder (not needed for synthetic)."
)
@click.option("--split", default="val", show_default=True)
@click.option(
    "--resize",
    help="Network input size HxW, or 'native' [default: the size the model was validated at "
    "in training, else a static model's own size]; predictions are always scored at the labels' own size.",
)
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto: by file type (.pt/.pth PyTorch, .onnx ONNX Runtime, .engine/.plan TensorRT); openvino runs a .onnx.")  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda (or cuda:N for PyTorch).")
@click.option("--precision", type=click.Choice(PRECISIONS),
              help="Compute precision on the CPU [default: fp32; on OpenVINO an INT8 graph's float layers run bf16 "
                   "on AMX CPUs]: bf16 runs on OpenVINO (AVX512-BF16/AMX CPUs only).")  # fmt: skip
@click.option(
    "--trust-engine", is_flag=True, help="Run a TensorRT engine whose manifest is missing or differs."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar [default: when stderr is a terminal]."
)
def command(model, dataset, data_root, split, resize, backend, device, precision, trust_engine, as_json, progress) -> None:
    """Evaluate MODEL (.pt checkpoint, .onnx, lowered .onnx or .engine) on whole images: pixel accuracy, mean
    accuracy, mean IoU, frequency-weighted IoU."""
    import sys

    from fcn_deploy.chain.backends import open_backend
    from fcn_deploy.core.datasets import build_dataset
    from fcn_deploy.core.errors import FcnDeployError
    from fcn_deploy.core.scoring import score
    from fcn_deploy.core.shapes import parse_hw

    with open_backend(model, backend, device, trust_engine, precision=precision) as net:
        card = net.card
        train_cfg = card.provenance.get("train_config") or {}
        dataset = dataset or train_cfg.get("dataset") or card.training_dataset
        if dataset is None:
            raise FcnDeployError(f"{model}: does not say which dataset it was trained on; pass --dataset")
        same = dataset == train_cfg.get("dataset")
        options = dict(train_cfg.get("dataset_options") or {}) if same else {}
        if data_root is None and same:
            data_root = train_cfg.get("data_root")
        ds = build_dataset(dataset, data_root, split, **options)
        if len(ds) == 0:
            raise FcnDeployError(
                f"dataset '{dataset}' split '{split}' has no images; check --data-root and --split"
            )
        if ds.num_classes != card.num_classes:
            raise FcnDeployError(
                f"{model}: model has {card.num_classes} classes but dataset '{dataset}' has {ds.num_classes}; "
                "evaluate on the dataset it was trained for"
            )
        if resize is None:
            size = tuple(train_cfg["resize"]) if train_cfg.get("resize") else net.input_sizes.fixed
        else:
            size = None if resize == "native" else parse_hw(resize, "--resize")
        show = sys.stderr.isatty() if progress is None else progress
        metrics = score(net, ds, size, progress="evaluate" if show else None).metrics
    result = {k: _finite(metrics[k]) for k in KEYS}
    result["per_class_iou"] = metrics["per_class_iou"]
    result["num_images"] = metrics["num_images"]
    if as_json:
        click.echo(json.dumps(result))
        return
    where = f"{dataset}/{split}" + (f" at {size[0]}x{size[1]}" if size else "")
    click.echo(f"{model}  ({card.variant}, {card.num_classes} classes, {net.name}) on {where}: {len(ds)} images")
    for k in KEYS:
        click.echo(f"  {k:<15} {_pct(result[k])}")
    click.echo("  per-class IoU:")
    for name, value in result["per_class_iou"].items():
        click.echo(f"    {name:<20} {_pct(value)}")


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x


def _pct(x: float | None) -> str:
    return "     -" if x is None else f"{100 * x:6.2f}"
