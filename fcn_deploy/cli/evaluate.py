"""`fcn-deploy evaluate`: the paper's four metrics and per-class IoU of a checkpoint on a dataset split."""

from __future__ import annotations

import json
import math

import click

DATASET_CHOICES = ["voc", "cityscapes", "camvid", "folder", "synthetic"]
KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou")


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "--dataset", type=click.Choice(DATASET_CHOICES), help="[default: the checkpoint's training dataset]"
)
@click.option(
    "--data-root", type=click.Path(file_okay=False), help="Dataset folder (not needed for synthetic)."
)
@click.option("--split", default="val", show_default=True)
@click.option(
    "--resize",
    help="Network input size HxW, or 'native' [default: the size the model was validated at "
    "in training]; predictions are always scored at the labels' own size.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar [default: when stderr is a terminal]."
)
def command(checkpoint, dataset, data_root, split, resize, device, as_json, progress) -> None:
    """Evaluate CHECKPOINT on whole images: pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU."""
    import sys

    from fcn_deploy.core.datasets import build_dataset
    from fcn_deploy.core.errors import FcnDeployError
    from fcn_deploy.core.shapes import parse_hw
    from fcn_deploy.training.checkpoint import model_from_checkpoint
    from fcn_deploy.training.device import auto_threads, resolve_device
    from fcn_deploy.training.evaluation import evaluate_model

    if (threads := auto_threads()) is not None:
        import torch

        torch.set_num_threads(threads)

    model, card, ckpt = model_from_checkpoint(checkpoint)
    train_cfg = ckpt.get("train_config") or {}
    dataset = dataset or train_cfg.get("dataset")
    if dataset is None:
        raise FcnDeployError(f"{checkpoint}: does not say which dataset it was trained on; pass --dataset")
    options = dict(train_cfg.get("dataset_options") or {}) if dataset == train_cfg.get("dataset") else {}
    if data_root is None and dataset == train_cfg.get("dataset"):
        data_root = train_cfg.get("data_root")
    ds = build_dataset(dataset, data_root, split, **options)
    if len(ds) == 0:
        raise FcnDeployError(
            f"dataset '{dataset}' split '{split}' has no images; check --data-root and --split"
        )
    if ds.num_classes != card.num_classes:
        raise FcnDeployError(
            f"{checkpoint}: model has {card.num_classes} classes but dataset '{dataset}' has {ds.num_classes}; "
            "evaluate on the dataset it was trained for"
        )
    if resize is None:
        size = tuple(train_cfg["resize"]) if train_cfg.get("resize") else None
    else:
        size = None if resize == "native" else parse_hw(resize, "--resize")
    show = sys.stderr.isatty() if progress is None else progress
    dev = resolve_device(device)
    metrics = evaluate_model(model.to(dev), ds, card.normalization, dev, size, show)
    result = {k: _finite(metrics[k]) for k in KEYS}
    result["per_class_iou"] = metrics["per_class_iou"]
    result["num_images"] = metrics["num_images"]
    if as_json:
        click.echo(json.dumps(result))
        return
    where = f"{dataset}/{split}" + (f" at {size[0]}x{size[1]}" if size else "")
    click.echo(f"{checkpoint}  ({card.variant}, {card.num_classes} classes) on {where}: {len(ds)} images")
    for k in KEYS:
        click.echo(f"  {k:<15} {_pct(result[k])}")
    click.echo("  per-class IoU:")
    for name, value in result["per_class_iou"].items():
        click.echo(f"    {name:<20} {_pct(value)}")


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x


def _pct(x: float | None) -> str:
    return "     -" if x is None else f"{100 * x:6.2f}"
