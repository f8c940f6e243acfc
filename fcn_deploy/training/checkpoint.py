"""Checkpoints: weights + model config + model card (+ training state), loadable with weights_only=True alone.

Everything is stored as tensors and plain Python containers/scalars/strings, so `torch.load(..., weights_only=True)`
needs no allow-listed classes. Written to a temp file and moved into place (fcn_deploy.core.atomic).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from fcn_deploy.core.atomic import sha256_file, write_bytes
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.model_config import ModelConfig, stored_value_problem
from fcn_deploy.training.fcn import FCN, build_model
from fcn_deploy.training.weights_io import torch_load

FORMAT = "fcn-deploy-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, model: FCN, card: ModelCard, **training_state: Any) -> None:
    """training_state: optimizer, scheduler, epoch, best_miou, train_config, ... (plain data or state dicts)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": dataclasses.asdict(model.config),
        "model_card": card.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **training_state,
    }
    payload["weights_sha256"] = weights_sha256(payload["state_dict"])  # the integrity record, checked on load
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes(path, buf.getvalue())


def weights_sha256(state_dict: dict[str, Any]) -> str:
    """sha256 over the state dict: names, dtypes, shapes and bytes of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        if not isinstance(t, torch.Tensor):
            raise FcnDeployError(f"state dict entry {name!r} is a {type(t).__name__}, not a tensor")
        t = t.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, checked to be ours (weights_only=True: an unsafe pickle is refused)."""
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise FcnDeployError(
            f"{path}: not an fcn-deploy checkpoint (no '{FORMAT}' header); train one with `fcn-deploy train`"
        )
    if ckpt.get("version") != VERSION:
        raise FcnDeployError(f"{path}: checkpoint version {ckpt.get('version')} is not supported (need {VERSION})")
    for key, kind in (("model_config", dict), ("model_card", dict), ("state_dict", dict)):
        if not isinstance(ckpt.get(key), kind):
            raise FcnDeployError(
                f"{path}: damaged checkpoint: no {key!r} {kind.__name__} in it; re-save it with `fcn-deploy train`"
            )
    recorded = ckpt.get("weights_sha256")  # older checkpoints have no record: loaded unchecked
    if recorded is not None:
        actual = weights_sha256(ckpt["state_dict"]) if all(
            isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values()) else "not tensors"  # fmt: skip
        if actual != recorded:
            raise FcnDeployError(
                f"{path}: the weights do not match the checkpoint's integrity record (sha256 {actual[:12]}... "
                f"recorded {str(recorded)[:12]}...): the file is damaged; use another copy or re-train"
            )
    return ckpt


def model_from_checkpoint(path: str | Path) -> tuple[FCN, ModelCard, dict[str, Any]]:
    """Build the model the checkpoint describes and load its weights; the card gets the file's sha256."""
    ckpt = load_checkpoint(path)
    try:
        config = ModelConfig(**ckpt["model_config"])
    except TypeError as e:
        raise FcnDeployError(f"{path}: malformed model_config ({e})") from None
    except FcnDeployError as e:  # a field out of range: name the file, not a CLI option
        raise FcnDeployError(f"{path}: its model_config holds {stored_value_problem(e)}; the checkpoint is damaged "
                             "or not from fcn-deploy") from None
    model = build_model(config)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:200]
        raise FcnDeployError(f"{path}: weights do not match the stored model config ({first})") from None
    # The stored model_config built the weights: it is the card's architecture (older cards lack learn_upsampling).
    card = ModelCard.from_dict(ckpt["model_card"], str(path)).replace(
        **dataclasses.asdict(config), checkpoint_sha256=sha256_file(path)
    )
    return model, card, ckpt
