"""Training throughput of `fcn-deploy train` with 1 process and with K processes under torchrun (same global
batch), plus how closely the K-process run follows the 1-process one. Prints one JSON object.

images/s counts training images over the log's train_seconds (the loop alone: no start-up, no validation).
On a CPU-only machine the K processes use gloo and share the cores: 2 CPU processes on 2 cores measure that the
distributed path is correct and what it costs, NOT how training scales; scaling figures need one GPU per process
(run this on such a machine with --device cuda). Record the load beside the figures: on a shared machine it
dominates.

    .venv/bin/python benchmarks/train_distributed.py [--procs 2] [--epochs 3] [--length 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fcn_deploy.core.environment import fingerprint


def run(procs: int, out: Path, args: argparse.Namespace) -> dict:
    bin_dir = Path(sys.executable).parent
    train = ["train", "--variant", "fcn8s", "--dataset", "synthetic", "--width", str(args.width),
             "--synthetic-length", str(args.length), "--synthetic-size", args.size, "--epochs", str(args.epochs),
             "--batch-size", str(args.batch_size), "--device", args.device, "--no-progress", "--output", str(out)]  # fmt: skip
    if procs == 1:
        cmd = [str(bin_dir / "fcn-deploy"), *train]
    else:
        cmd = [str(bin_dir / "torchrun"), "--standalone", "--nproc-per-node", str(procs), "-m", "fcn_deploy", *train]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train_s = sum(e["train_seconds"] for e in log)
    return {
        "processes": procs,
        "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
        "images_per_s": round(args.length * args.epochs / train_s, 2),
        "train_seconds": round(train_s, 2),
        "wall_seconds": round(wall, 1),
        "step_losses": [v for e in log for v in e["step_losses"]],
        "val_mean_iou": log[-1]["val"]["mean_iou"],
        "weights": str(out / "last.pt"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--length", type=int, default=64, help="Synthetic images per split.")
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--batch-size", type=int, default=8, help="The global batch of both runs.")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="fcn_train_distributed_"))
    load_start = os.getloadavg()
    one = run(1, root / "one", args)
    many = run(args.procs, root / f"p{args.procs}", args)
    import torch

    from fcn_deploy.training.checkpoint import load_checkpoint

    w1, wk = (load_checkpoint(r["weights"])["state_dict"] for r in (one, many))
    rel = max(abs(b - a) / max(abs(a), 1e-12) for a, b in zip(one["step_losses"], many["step_losses"], strict=True))
    result = {
        "benchmark": "train_distributed",
        "runs": [{k: v for k, v in r.items() if k not in ("step_losses", "weights")} for r in (one, many)],
        "throughput_ratio": round(many["images_per_s"] / one["images_per_s"], 3),
        "max_step_loss_rel_diff": rel,
        "max_weight_abs_diff": max(float(torch.max(torch.abs(w1[k] - wk[k]))) for k in w1),
        "same_val_mean_iou": one["val_mean_iou"] == many["val_mean_iou"],
        "note": (
            f"{args.procs} processes on {os.cpu_count()} CPU cores with gloo share the cores: this checks the "
            "distributed path and its overhead, not scaling; GPU scaling needs one GPU per process"
            if args.device == "cpu"
            else "one GPU per process"
        ),
        "config": vars(args),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "environment": fingerprint(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
