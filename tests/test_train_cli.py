"""`fcn-deploy train` / `evaluate` end to end: outputs, SIGKILL + --resume, and one-line errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fcn_deploy.cli import main
from fcn_deploy.core.card import NORMALIZATIONS, ModelCard
from fcn_deploy.core.datasets import DATASETS
from fcn_deploy.core.model_config import PADDINGS, VARIANTS, ModelConfig
from fcn_deploy.training.checkpoint import load_checkpoint, save_checkpoint
from fcn_deploy.training.config import TrainConfig
from fcn_deploy.training.fcn import build_model
from fcn_deploy.training.launch import BACKENDS as DIST_BACKENDS
from fcn_deploy.training.recipes import OPTIMIZERS, REDUCTIONS, SCHEDULES

FCN_DEPLOY = str(Path(sys.executable).with_name("fcn-deploy"))
TINY = ["--dataset", "synthetic", "--width", "0.0625", "--synthetic-size", "32x32", "--num-classes", "3"]


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    result = run_cli(
        "train", *TINY, "--synthetic-length", "8", "--epochs", "2", "--batch-size", "4", "--output", str(out)
    )
    assert result.exit_code == 0, result.output
    return out


def test_train_cli_outputs_and_summary(trained):
    assert {"best.pt", "last.pt", "log.jsonl"} <= {p.name for p in trained.iterdir()}
    assert not [p for p in trained.iterdir() if p.name.endswith(".tmp")]
    ckpt = load_checkpoint(trained / "best.pt")
    assert ckpt["train_config"]["dataset_options"] == {"num_classes": 3, "size": [32, 32], "length": 8}
    assert ckpt["model_card"]["normalization"]["channel_order"] == "RGB"


def test_evaluate_json_contract(trained):
    result = run_cli("evaluate", str(trained / "best.pt"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) == {
        "pixel_accuracy",
        "mean_accuracy",
        "mean_iou",
        "fw_iou",
        "per_class_iou",
        "num_images",
    }
    assert report["num_images"] == 8
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        assert 0.0 <= report[key] <= 1.0
    assert set(report["per_class_iou"]) == {"background", "disc", "box"}
    assert report["mean_iou"] == pytest.approx(load_checkpoint(trained / "best.pt")["best_miou"])


def test_evaluate_text_lists_metrics_and_classes(trained):
    result = run_cli("evaluate", str(trained / "last.pt"), "--dataset", "synthetic", "--split", "val")
    assert result.exit_code == 0, result.output
    for word in ("pixel_accuracy", "mean_iou", "fw_iou", "per-class IoU", "background", "disc", "box"):
        assert word in result.output


def test_existing_run_is_not_overwritten_without_resume(trained):
    result = run_cli("train", *TINY, "--output", str(trained))
    assert_one_line_error(result, "last.pt exists", "--resume")


def test_resume_with_conflicting_option_is_refused(trained):
    result = run_cli("train", *TINY, "--synthetic-length", "8", "--epochs", "2", "--lr", "0.5", "--resume",
                     "--output", str(trained))  # fmt: skip
    assert_one_line_error(result, "--lr 0.5", "--resume")


def test_a_run_out_of_minutes_says_how_to_continue_it(tmp_path):
    args = ["train", *TINY, "--synthetic-length", "8", "--epochs", "3", "--batch-size", "4", "--max-minutes", "0",
            "--output", str(tmp_path / "out")]  # fmt: skip
    r = run_cli(*args)
    assert r.exit_code == 0, r.output
    assert "stopping after epoch 1: the 0-minute budget is spent" in r.output
    assert "--max-minutes reached after epoch 1: the same command with --resume continues it" in r.output
    again = run_cli(*args, "--resume")  # the hint works as printed
    assert again.exit_code == 0 and "stopping after epoch 2" in again.output, again.output


def test_sigkill_mid_epoch_then_resume(tmp_path):
    out = tmp_path / "run"
    args = [FCN_DEPLOY, "train", *TINY, "--synthetic-length", "48", "--epochs", "4", "--batch-size", "4",
            "--output", str(out)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = out / "log.jsonl"
    deadline = time.monotonic() + 240
    while (
        not (log.is_file() and log.read_text().strip())
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed; make the epochs longer"
    time.sleep(0.2)  # into epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [json.loads(line)["epoch"] for line in log.read_text().splitlines()]
    assert done and done[-1] < 4
    for name in ("last.pt", "best.pt"):  # the destinations are whole; only a temp file may be left behind
        assert load_checkpoint(out / name)["epoch"] >= 1
    before = load_checkpoint(out / "last.pt")["epoch"]

    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch {before}" in resumed.stderr and "Traceback" not in resumed.stderr
    epochs = [json.loads(line)["epoch"] for line in log.read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
    assert load_checkpoint(out / "last.pt")["epoch"] == 4
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["epochs_done"] == 4


# --- bad input: one line, exit 1, no traceback ---------------------------------------------------------------
def _folder(root: Path, image_size=(32, 32), mask_size=(32, 32), mask_value=1, corrupt=False) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("background\nthing\n")
    image = root / "images" / "a.png"
    if corrupt:
        image.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    else:
        Image.fromarray(np.zeros((*image_size, 3), np.uint8)).save(image)
    Image.fromarray(np.full(mask_size, mask_value, np.uint8)).save(root / "masks" / "a.png")
    return root


def _train_folder(root: Path, tmp_path: Path):
    return run_cli("train", "--dataset", "folder", "--data-root", str(root), "--width", "0.0625", "--epochs", "1",
                   "--output", str(tmp_path / "out"))  # fmt: skip


def test_missing_data_root(tmp_path):
    result = run_cli(
        "train", "--dataset", "camvid", "--data-root", str(tmp_path / "nope"), "--output", str(tmp_path)
    )
    assert_one_line_error(result, str(tmp_path / "nope"), "--data-root")


def test_empty_split(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("background\nthing\n")
    assert_one_line_error(_train_folder(root, tmp_path), "no images for split 'train'")


def test_mask_size_mismatch(tmp_path):
    root = _folder(tmp_path / "data", mask_size=(16, 32))
    assert_one_line_error(_train_folder(root, tmp_path), "a.png", "nearest")


def test_bad_mask_value(tmp_path):
    root = _folder(tmp_path / "data", mask_value=7)
    assert_one_line_error(_train_folder(root, tmp_path), "masks/a.png", "value(s) 7")


def test_corrupt_png(tmp_path):
    root = _folder(tmp_path / "data", corrupt=True)
    assert_one_line_error(_train_folder(root, tmp_path), "images/a.png", "cannot read image")


def test_init_from_checkpoint_of_another_variant(tmp_path):
    model = build_model(ModelConfig("fcn8s", 3, 0.0625, "same"))
    ckpt = tmp_path / "fcn8s.pt"
    save_checkpoint(ckpt, model, ModelCard.default("fcn8s", 3))
    result = run_cli("train", *TINY, "--variant", "fcn32s", "--init-from", str(ckpt), "--epochs", "1",
                     "--output", str(tmp_path / "out"))  # fmt: skip
    assert_one_line_error(result, str(ckpt), "fcn8s checkpoint", "fcn32s")


def test_resume_without_a_run(tmp_path):
    result = run_cli("train", *TINY, "--resume", "--output", str(tmp_path))
    assert_one_line_error(result, "last.pt", "drop --resume")


def test_synthetic_options_on_a_real_dataset(tmp_path):
    result = run_cli("train", "--dataset", "camvid", "--num-classes", "5", "--data-root", str(tmp_path))
    assert_one_line_error(result, "--num-classes")


def test_evaluate_missing_checkpoint(tmp_path):
    assert_one_line_error(run_cli("evaluate", str(tmp_path / "none.pt"), "--json"), "none.pt", "no such file")


# --- choices and defaults come from the library -------------------------------------------------------------
def _options(command) -> dict:
    return {p.name: p for p in command.params if isinstance(p, click.Option)}


def _defaults(command, *required: str) -> dict:
    """What the command receives for each option not given on the command line."""
    return dict(command.make_context(command.name, list(required)).params)


def test_train_cli_defaults_are_the_train_config_defaults():
    from fcn_deploy.cli.train import RUNTIME_OPTIONS
    from fcn_deploy.cli.train import command as train_command

    options, defaults = _options(train_command), _defaults(train_command, "--dataset", "synthetic")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    flags = {"no_hflip": "hflip", "no_amp": "amp"}  # negated on the command line
    synthetic_only = {"num_classes", "synthetic_size", "synthetic_length"}  # become dataset_options
    for name in options:
        if name in RUNTIME_OPTIONS or name in synthetic_only or name == "dataset":  # --dataset is required
            continue
        key = flags.get(name, name)
        assert key in fields, f"--{name} has no TrainConfig field"
        field = fields[key]
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        cli_default = (not defaults[name]) if name in flags else defaults[name]
        assert cli_default == default, f"--{name}: CLI default {defaults[name]!r}, TrainConfig {default!r}"
    covered = {flags.get(n, n) for n in options} | {"dataset_options"}
    assert set(fields) <= covered, f"TrainConfig fields without an option: {set(fields) - covered}"
    choices = {name: tuple(o.type.choices) for name, o in options.items() if isinstance(o.type, click.Choice)}
    assert choices == {
        "variant": VARIANTS, "dataset": DATASETS, "padding": PADDINGS, "optimizer": OPTIMIZERS,
        "schedule": SCHEDULES, "loss_reduction": REDUCTIONS, "normalization": NORMALIZATIONS,
        "dist_backend": DIST_BACKENDS,
    }  # fmt: skip


def test_train_cli_leaves_the_recipe_defaults_to_the_library(tmp_path):
    """--optimizer sgd without --schedule/--loss-reduction trains what TrainConfig(optimizer="sgd") trains."""
    out = tmp_path / "run"
    result = run_cli("train", *TINY, "--synthetic-length", "4", "--epochs", "1", "--batch-size", "4",
                     "--optimizer", "sgd", "--output", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    stored = TrainConfig.from_dict(load_checkpoint(out / "last.pt")["train_config"])
    library = TrainConfig(optimizer="sgd")
    assert (stored.schedule, stored.loss_reduction) == (library.schedule, library.loss_reduction) == ("fixed", "sum")


def test_model_info_defaults_are_the_model_config_defaults():
    from fcn_deploy.cli.model_info import command as model_info_command

    options, defaults = _options(model_info_command), _defaults(model_info_command)
    for field in dataclasses.fields(ModelConfig):
        assert defaults[field.name] == field.default, field.name
    assert tuple(options["variant"].type.choices) == VARIANTS
    assert tuple(options["padding"].type.choices) == PADDINGS
