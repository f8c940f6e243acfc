"""PyTorch backend for training checkpoints (`.pt`/`.pth`). The only runtime module that imports torch, lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.outputs import normalize_outputs


class TorchBackend(Backend):
    name = "torch"
    fixed_hw = None
    kinds = ("labels", "logits")

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        try:
            import torch
        except ImportError:
            raise MissingDependencyError(
                f"{path}: running a training checkpoint needs PyTorch (pip install 'fcn-deploy[train]'); "
                "or export it with `fcn-deploy export` and run the .onnx"
            ) from None
        from fcn_deploy.training.checkpoint import model_from_checkpoint

        if device == "cuda" and not torch.cuda.is_available():
            raise MissingDependencyError("--device cuda: this PyTorch sees no CUDA GPU; use --device cpu")
        if device not in ("cpu", "cuda"):
            raise FcnDeployError(f"--device {device!r}: choose cpu or cuda")
        self.path = Path(path)
        self._torch = torch
        self.device = torch.device(device)
        model, self.card, _ = model_from_checkpoint(self.path)
        self.model = model.eval().to(self.device)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device))
        return normalize_outputs({"logits": logits.float().cpu().numpy()})

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": str(self.path), "device": str(self.device)}

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
