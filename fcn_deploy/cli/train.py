"""`fcn-deploy train`: train an FCN on a dataset, writing OUTPUT/last.pt, OUTPUT/best.pt and OUTPUT/log.jsonl."""

from __future__ import annotations

import json

import click

from fcn_deploy.core.card import NORMALIZATIONS
from fcn_deploy.core.datasets import DATASETS
from fcn_deploy.core.model_config import PADDINGS, VARIANTS
from fcn_deploy.training.config import DEFAULTS
from fcn_deploy.training.launch import BACKENDS as DIST_BACKENDS
from fcn_deploy.training.launch import DEFAULT_TIMEOUT_S
from fcn_deploy.training.recipes import (
    ADAMW_LR,
    ADAMW_WEIGHT_DECAY,
    DEFAULT_REDUCTION,
    DEFAULT_SCHEDULE,
    OPTIMIZERS,
    REDUCTIONS,
    SCHEDULES,
    SGD_WEIGHT_DECAY,
)

# Options that only say where or how fast to run; they may change between a run and its --resume.
RUNTIME_OPTIONS = {
    "output", "resume", "workers", "threads", "device", "max_minutes", "progress", "dist_backend", "dist_timeout",
}  # fmt: skip


@click.command("train")
@click.option("--variant", type=click.Choice(VARIANTS), default=DEFAULTS.variant, show_default=True)
@click.option("--dataset", type=click.Choice(DATASETS), required=True)
@click.option(
    "--data-root", type=click.Path(file_okay=False), help="Dataset folder (not needed for synthetic)."
)
@click.option("--width", type=float, default=DEFAULTS.width, show_default=True, help="Trunk channel multiplier.")
@click.option(
    "--padding",
    type=click.Choice(PADDINGS),
    default=DEFAULTS.padding,
    show_default=True,
    help="paper: the 100-pixel input pad of Long et al.; same: no pad, cheaper, edge-friendly.",
)
@click.option(
    "--batch-norm", is_flag=True, help="Batch norm after every trunk convolution (from-scratch training)."
)
@click.option("--epochs", type=int, default=DEFAULTS.epochs, show_default=True)
@click.option(
    "--batch-size",
    type=int,
    default=DEFAULTS.batch_size,
    show_default=True,
    help="Global batch: under torchrun with N processes each takes batch-size / N images (must divide), so "
    "one command trains the same at any scale.",
)
@click.option("--crop", help="Training crop HxW (random, ignore-padded); default: whole images.")
@click.option(
    "--resize",
    help="Network resolution HxW for training and validation (predictions are scored at "
    "the labels' own size); default: native size.",
)
@click.option(
    "--scale-range",
    type=float,
    nargs=2,
    default=DEFAULTS.scale_range,
    show_default=True,
    help="Random scale LO HI before cropping.",
)
@click.option("--no-hflip", is_flag=True, help="Disable random horizontal flips.")
@click.option(
    "--optimizer",
    type=click.Choice(OPTIMIZERS),
    default=DEFAULTS.optimizer,
    show_default=True,
    help="sgd: the paper's recipe (for --backbone-weights); adamw: from-scratch CPU training.",
)
@click.option(
    "--lr",
    type=float,
    help=f"Learning rate [default: adamw {ADAMW_LR:g}; sgd the reference solvers' "
    "1e-10/1e-12/1e-14/1e-10 for fcn32s/16s/8s/8s-atonce with the sum loss, x2e5 with the mean loss].",
)
@click.option(
    "--weight-decay",
    type=float,
    help=f"[default: adamw {ADAMW_WEIGHT_DECAY:g}, sgd {SGD_WEIGHT_DECAY:g}]; never applied to biases.",
)
@click.option("--momentum", type=float, default=DEFAULTS.momentum, show_default=True, help="SGD momentum.")
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    help="Learning-rate schedule per step [default: "
    + ", ".join(f"{k} {v}" for k, v in DEFAULT_SCHEDULE.items()) + "].",
)
@click.option(
    "--loss-reduction",
    type=click.Choice(REDUCTIONS),
    help="Cross-entropy over pixels [default: "
    + ", ".join(f"{k} {v}" for k, v in DEFAULT_REDUCTION.items()) + "; sum is the paper's].",
)
@click.option(
    "--accumulate", type=int, default=DEFAULTS.accumulate, show_default=True, help="Batches per optimiser step."
)
@click.option(
    "--normalization",
    type=click.Choice(NORMALIZATIONS),
    default=DEFAULTS.normalization,
    show_default=True,
    help="Input normalisation stored in the model card (caffe: BGR 0-255 minus the paper's mean).",
)
@click.option(
    "--backbone-weights", type=click.Path(dir_okay=False), help="torchvision VGG16 state dict for the trunk."
)
@click.option(
    "--init-from",
    type=click.Path(dir_okay=False),
    help="Checkpoint to start from (staged training: fcn32s -> fcn16s -> fcn8s).",
)
@click.option(
    "--num-classes", type=int, help="Classes of the synthetic dataset (incl. background) [default: 4]."
)
@click.option("--synthetic-size", help="Image size HxW of the synthetic dataset [default: 64x64].")
@click.option(
    "--synthetic-length",
    type=int,
    help="Images per split of the synthetic dataset [default: 128 train, 32 val].",
)
@click.option("--train-split", default=DEFAULTS.train_split, show_default=True)
@click.option("--val-split", default=DEFAULTS.val_split, show_default=True)
@click.option(
    "--val-every",
    type=int,
    default=DEFAULTS.val_every,
    show_default=True,
    help="Validate every N epochs (and at the end).",
)
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--no-amp", is_flag=True, help="No mixed precision on CUDA (never used on CPU anyway).")
@click.option("--output", type=click.Path(file_okay=False), default="runs/train", show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last.pt (same config).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option(
    "--threads",
    type=int,
    help="PyTorch CPU threads [default: 1 when the load average already fills every core, else PyTorch's choice].",
)
@click.option(
    "--max-minutes", type=float, help="Stop after the epoch that passes this wall time (resumable)."
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bars [default: when stderr is a terminal]."
)
@click.option(
    "--dist-backend",
    type=click.Choice(DIST_BACKENDS),
    default="auto",
    show_default=True,
    help="Under torchrun / srun (WORLD_SIZE > 1): auto is nccl on CUDA, gloo on the CPU.",
)
@click.option(
    "--dist-timeout",
    type=float,
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds a rank waits for the others before it stops (a dead or hung rank).",
)
def command(**opts) -> None:
    """Train an FCN; writes OUTPUT/last.pt each epoch, OUTPUT/best.pt on the best val mean IoU, OUTPUT/log.jsonl.

    Several processes: `torchrun --standalone --nproc-per-node K -m fcn_deploy train ...` (one per GPU, or K CPU
    processes with gloo); rank 0 alone prints and writes, and the run matches one process with the same
    --batch-size.
    """
    from fcn_deploy.core.errors import FcnDeployError
    from fcn_deploy.core.shapes import parse_hw

    ctx = click.get_current_context()
    synthetic_only = (opts["num_classes"], opts["synthetic_size"], opts["synthetic_length"])
    if opts["dataset"] != "synthetic" and any(v is not None for v in synthetic_only):
        raise FcnDeployError(
            "--num-classes and --synthetic-* apply to --dataset synthetic only (other "
            "datasets define their classes); drop them"
        )
    dataset_options = {}
    if opts["num_classes"] is not None:
        dataset_options["num_classes"] = opts["num_classes"]
    if opts["synthetic_size"]:
        dataset_options["size"] = list(parse_hw(opts["synthetic_size"], "--synthetic-size"))
    if opts["synthetic_length"] is not None:
        dataset_options["length"] = opts["synthetic_length"]
    import math

    for name in ("lr", "weight_decay", "momentum", "width", "max_minutes"):
        value = opts.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            raise FcnDeployError(f"--{name.replace('_', '-')} {value}: must be a finite number")
    if opts.get("lr") is not None and opts["lr"] <= 0:
        raise FcnDeployError(f"--lr {opts['lr']}: the learning rate must be positive")
    from fcn_deploy.core.paths import check_outputs

    check_outputs({f"--{k.replace('_', '-')}": opts.get(k) for k in ("data_root", "init_from", "backbone_weights")},
                  {"--output": opts["output"]})  # fmt: skip
    fields = dict(
        variant=opts["variant"],
        width=opts["width"],
        padding=opts["padding"],
        batch_norm=opts["batch_norm"],
        dataset=opts["dataset"],
        data_root=opts["data_root"],
        dataset_options=dataset_options,
        train_split=opts["train_split"],
        val_split=opts["val_split"],
        epochs=opts["epochs"],
        batch_size=opts["batch_size"],
        crop=parse_hw(opts["crop"], "--crop") if opts["crop"] else None,
        resize=parse_hw(opts["resize"], "--resize") if opts["resize"] else None,
        scale_range=tuple(opts["scale_range"]),
        hflip=not opts["no_hflip"],
        optimizer=opts["optimizer"],
        lr=opts["lr"],
        weight_decay=opts["weight_decay"],
        momentum=opts["momentum"],
        schedule=opts["schedule"],
        loss_reduction=opts["loss_reduction"],
        accumulate=opts["accumulate"],
        normalization=opts["normalization"],
        backbone_weights=opts["backbone_weights"],
        init_from=opts["init_from"],
        seed=opts["seed"],
        val_every=opts["val_every"],
        amp=not opts["no_amp"],
    )
    from pathlib import Path

    from fcn_deploy.training.config import TrainConfig
    from fcn_deploy.training.launch import elastic_restart, is_main_process
    from fcn_deploy.training.run_dir import LAST, resume_config
    from fcn_deploy.training.trainer import train

    if not opts["resume"] and elastic_restart() and (Path(opts["output"]) / LAST).is_file():
        opts["resume"] = True  # torchrun --max-restarts restarted the workers: continue from last.pt
    if opts["resume"]:
        cfg = resume_config(opts["output"])[0]
        _check_resume_options(ctx, cfg, opts["output"])
    else:
        cfg = TrainConfig(**fields)
    summary = train(
        cfg,
        opts["output"],
        resume=opts["resume"],
        device=opts["device"],
        workers=opts["workers"],
        threads=opts["threads"],
        max_minutes=opts["max_minutes"],
        progress=opts["progress"],
        echo=lambda s: click.echo(s, err=True),
        dist_backend=opts["dist_backend"],
        dist_timeout=opts["dist_timeout"],
    )
    if is_main_process():
        if summary["stopped_early"]:
            click.echo(f"--max-minutes reached after epoch {summary['epochs_done']}: the same command with --resume "
                       "continues it", err=True)  # fmt: skip
        click.echo(json.dumps(summary))


def _check_resume_options(ctx: click.Context, stored, output: str) -> None:
    """--resume reuses the stored config; an option given on the command line must agree with it."""
    from fcn_deploy.core.errors import FcnDeployError

    fresh = dict(ctx.params)
    explicit = [
        name
        for name in fresh
        if name not in RUNTIME_OPTIONS
        and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    ]
    # Compare through a config built from the stored one plus the explicit options.
    stored_d = stored.to_dict()
    direct = {"crop", "resize"}
    conflicts = []
    for name in explicit:
        value = fresh[name]
        key = {"no_hflip": "hflip", "no_amp": "amp"}.get(name, name)
        if key not in stored_d:
            continue
        if name in ("no_hflip", "no_amp"):
            value = not value
        elif name in direct and value is not None:
            from fcn_deploy.core.shapes import parse_hw

            value = list(parse_hw(value, f"--{name}"))
        elif name == "scale_range":
            value = list(value)
        if value != stored_d[key]:
            conflicts.append(f"--{name.replace('_', '-')} {fresh[name]} (the run has {stored_d[key]})")
    if conflicts:
        raise FcnDeployError(
            f"--resume continues the run in {output} with its stored settings, but {'; '.join(conflicts)}; "
            "drop those options or train into a new --output"
        )
