"""A training run's directory: last.pt, best.pt and log.jsonl, never overwritten by a new run, resumed from last.pt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fcn_deploy.core.atomic import write_text
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.training.checkpoint import load_checkpoint
from fcn_deploy.training.config import TrainConfig

LAST, BEST, LOG = "last.pt", "best.pt", "log.jsonl"


def refuse_existing_run(output: str | Path) -> None:
    """A new run never overwrites another one's checkpoints."""
    last = Path(output) / LAST
    if last.exists():
        raise FcnDeployError(
            f"{last} exists: {output} already holds a run; pass --resume to continue it or choose another --output"
        )


def remove_stale_temps(output: Path) -> list[Path]:
    """A SIGKILL during an atomic write can leave its temp file (never the destination): clean ours up."""
    stale = [p for name in (LAST, BEST, LOG) for p in output.glob(f".{name}.*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def read_log(path: Path, upto_epoch: int) -> list[dict]:
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            if entry.get("epoch", 0) <= upto_epoch:
                entries.append(entry)
    return entries


def restore_log(entries: list[dict], stored: list[dict] | None) -> tuple[list[dict], list[int]]:
    """log.jsonl's lines plus those of `stored` (the history in last.pt) that it lacks: a kill after last.pt was
    published but before its log line was appended loses nothing. Returns the log and the epochs restored."""
    have = {e.get("epoch") for e in entries}
    missing = [e for e in stored or [] if isinstance(e, dict) and e.get("epoch") not in have]
    if not missing:
        return entries, []
    merged = sorted([*entries, *missing], key=lambda e: int(e.get("epoch", 0)))
    return merged, [int(e["epoch"]) for e in missing]


def write_log(path: Path, entries: list[dict]) -> None:
    write_text(path, "".join(json.dumps(e) + "\n" for e in entries))


def resume_config(output: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and checkpoint of the run in `output` (for --resume)."""
    last = Path(output) / LAST
    if not last.is_file():
        raise FcnDeployError(
            f"{last}: nothing to resume (no last.pt); drop --resume to start a new run there"
        )
    ckpt = load_checkpoint(last)
    if "train_config" not in ckpt or "optimizer" not in ckpt:
        raise FcnDeployError(
            f"{last}: holds no training state (not written by `fcn-deploy train`); drop --resume"
        )
    return TrainConfig.from_dict(ckpt["train_config"], str(last)), ckpt
