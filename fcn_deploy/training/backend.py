"""PyTorch backend for training checkpoints (`.pt`/`.pth`) and in-memory models (the trainer's validation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.outputs import normalize_outputs


class TorchBackend(Backend):
    """device: cpu, cuda, cuda:N or auto (a GPU when PyTorch sees one)."""

    name = "torch"

    def __init__(self, model: Any, card: ModelCard, device: Any, path: Path | None = None) -> None:
        """Wrap a live nn.Module as it is (its train/eval mode is the caller's), described by `card`."""
        import torch

        self._torch, self.model, self.card, self.device, self.path = (
            torch,
            model,
            card,
            torch.device(device),
            path,
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> TorchBackend:
        """The checkpoint's model in eval mode; PyTorch's threads follow the trainer's policy (apply_threads)."""
        try:
            import torch  # noqa: F401 - a clear error before the checkpoint code imports it
        except ImportError:
            raise MissingDependencyError(
                f"{path}: running a training checkpoint needs PyTorch (pip install 'fcn-deploy[train]'); "
                "or export it with `fcn-deploy export` and run the .onnx"
            ) from None
        from fcn_deploy.training.checkpoint import model_from_checkpoint
        from fcn_deploy.training.device import apply_threads

        apply_threads(None)
        dev = _device(device)
        model, card, _ = model_from_checkpoint(path)
        return cls(model.eval().to(dev), card, dev, Path(path))

    @property
    def output_kinds(self) -> tuple[str, ...]:
        return ("logits",)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device))
        return normalize_outputs({"logits": logits.float().cpu().numpy()})

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": str(self.path or "in memory"), "device": str(self.device)}

    def close(self) -> None:
        self.model = None


def _device(name: str) -> Any:
    from fcn_deploy.training.device import resolve_device

    if name != "auto" and name != "cpu" and not name.startswith("cuda"):
        raise FcnDeployError(f"--device {name!r}: choose auto, cpu, cuda or cuda:N")
    try:
        return resolve_device(name)
    except FcnDeployError:
        raise MissingDependencyError(
            f"--device {name}: this PyTorch sees no CUDA GPU; use --device cpu"
        ) from None
