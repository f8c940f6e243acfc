"""`fcn-deploy train` on several processes (gloo on the CPU): the same run as one process, exact validation,
one rank killed.

Real processes: torchrun for the headline command, and RANK/WORLD_SIZE/MASTER_* set by hand for the srun-style
launch (what a SLURM job script does). A narrow FCN-8s (width 0.125, no batch norm) on 32x32 synthetic images.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fcn_deploy.cli import main
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.training.checkpoint import load_checkpoint
from fcn_deploy.training.data import epoch_order, rank_batches
from fcn_deploy.training.distributed import process_device

BIN = Path(sys.executable).parent
FCN_DEPLOY, TORCHRUN = str(BIN / "fcn-deploy"), str(BIN / "torchrun")
# 9 training images in global batches of 4: 4, 4, 1 (the last leaves rank 1 a zero-weight stand-in);
# 9 validation images do not divide by 2.
ARGS = ["--dataset", "synthetic", "--variant", "fcn8s", "--width", "0.125", "--synthetic-size", "32x32",
        "--num-classes", "3", "--batch-size", "4", "--threads", "1", "--no-progress"]  # fmt: skip
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV and not k.startswith("TORCHELASTIC")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(args: list[str], world: int = 2, timeout: float = 30) -> list[subprocess.Popen]:
    """`world` processes of `fcn-deploy train ARGS` joined by hand, as srun starts them."""
    port = str(_port())
    return [
        subprocess.Popen(
            [FCN_DEPLOY, "train", *args, "--dist-timeout", str(timeout)],
            env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                     MASTER_ADDR="127.0.0.1", MASTER_PORT=port),  # fmt: skip
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(world)
    ]


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


# --- the sample order ------------------------------------------------------------------------------------
def test_ranks_split_each_global_batch_of_the_one_process_order():
    order = epoch_order(7, 3, 9)
    one = rank_batches(order, 4)
    two = [rank_batches(order, 4, r, 2) for r in (0, 1)]
    assert [b.items for b in one] == [order[:4], order[4:8], order[8:]]
    for k, batch in enumerate(one):
        real = [i for shares in two for i in (shares[k].items if shares[k].real else [])]
        assert real == batch.items and all(s[k].global_size == len(batch.items) for s in two)
    assert not two[1][2].real and two[1][2].items == order[8:9]  # the stand-in: a real image, zero weight
    assert epoch_order(7, 4, 9) != order and epoch_order(7, 3, 9) == order
    with pytest.raises(FcnDeployError, match="--batch-size 5"):
        rank_batches(order, 5, 0, 2)


def test_batch_that_does_not_divide_and_a_fixed_gpu_are_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = CliRunner().invoke(main, ["train", *ARGS, "--batch-size", "5", "--output", str(tmp_path / "r")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--batch-size 5 is the global batch and does not divide among 2 processes" in result.output
    assert not (tmp_path / "r").exists()
    with pytest.raises(FcnDeployError, match="LOCAL_RANK"):
        process_device("cuda:1", 0, 2)


# --- 2 processes == 1 process ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("ddp")
    one, two = root / "one", root / "two"
    common = [*ARGS, "--synthetic-length", "9", "--epochs", "2"]
    single = CliRunner().invoke(main, ["train", *common, "--output", str(one)], catch_exceptions=False)
    assert single.exit_code == 0, single.output
    port = str(_port())
    launched = subprocess.run(
        [TORCHRUN, "--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
         "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "fcn_deploy", "train", *common, "--output", str(two)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    return one, two, launched


@pytest.mark.slow
def test_two_processes_train_like_one(runs):
    one, two, launched = runs
    log1, log2 = _log(one), _log(two)
    assert [e["epoch"] for e in log2] == [1, 2] and all(e["world_size"] == 2 for e in log2)
    for a, b in zip(log1, log2, strict=True):
        assert len(a["step_losses"]) == len(b["step_losses"]) == 3
        assert b["step_losses"] == pytest.approx(a["step_losses"], rel=1e-5)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["val"] == a["val"]  # identical metrics, per-class IoU included
        assert b["lr"] == a["lr"]
    w1, w2 = _weights(one / "last.pt"), _weights(two / "last.pt")
    assert list(w2) == list(w1) and not [k for k in w2 if k.startswith("module.")]
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-5, msg=k)
    assert not [k for k in _weights(two / "best.pt") if k.startswith("module.")]
    # rank 0 alone prints: one summary line, each epoch once
    summary = json.loads(launched.stdout.strip())
    assert summary["world_size"] == 2 and summary["epochs_done"] == 2
    assert launched.stderr.count("epoch 2/2") == 1 and "Traceback" not in launched.stderr


@pytest.mark.slow
def test_distributed_validation_equals_evaluate_on_the_checkpoint(runs):
    _, two, _ = runs
    val = _log(two)[-1]["val"]
    assert val["num_images"] == 9  # every image once: 5 on rank 0, 4 on rank 1, no padding
    result = CliRunner().invoke(main, ["evaluate", str(two / "last.pt"), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output)
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "per_class_iou", "num_images"):
        assert evaluated[key] == val[key], key


# --- one rank killed ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_rank_stops_the_others_then_resume_continues(tmp_path):
    out = tmp_path / "run"
    args = [*ARGS, "--synthetic-length", "16", "--epochs", "2", "--output", str(out)]
    ranks = _ranks(args, timeout=30)
    log = out / "log.jsonl"
    deadline = time.monotonic() + 240
    while not (log.is_file() and log.read_text().strip()) and ranks[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ranks[0].poll() is None, "training finished before a rank could be killed; make the epochs longer"
    os.kill(ranks[1].pid, signal.SIGKILL)  # mid-epoch 2
    killed = time.monotonic()
    _, err0 = ranks[0].communicate(timeout=60)
    ranks[1].communicate()
    assert ranks[0].returncode == 1 and ranks[1].returncode == -signal.SIGKILL
    assert time.monotonic() - killed < 30  # well within --dist-timeout
    lines = [line for line in err0.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in err0, err0
    assert lines[0].startswith("Error: rank 0 of 2: ") and "rank 1 stopped" in lines[0] and "--resume" in lines[0]
    assert [e["epoch"] for e in _log(out)] == [1]
    for name in ("last.pt", "best.pt"):  # whole files; any temp file is only a temp file
        assert load_checkpoint(out / name)["epoch"] == 1

    resumed = _ranks([*args, "--resume"])
    outputs = [p.communicate(timeout=300) for p in resumed]
    assert [p.returncode for p in resumed] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert "after epoch 1" in outputs[0][1] and outputs[1][0] == ""  # rank 1 prints nothing
    assert [e["epoch"] for e in _log(out)] == [1, 2]
    assert json.loads(outputs[0][0])["epochs_done"] == 2 and load_checkpoint(out / "last.pt")["epoch"] == 2
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]

