"""Reading PyTorch weight files safely: torch.load with weights_only=True and one-line errors."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from fcn_deploy.core.errors import FcnDeployError


def torch_load(path: str | Path) -> Any:
    """torch.load with weights_only=True and one-line errors; an unsafe pickle is refused, never executed."""
    p = Path(path)
    if not p.is_file():
        raise FcnDeployError(f"{p}: no such file; check the path")
    if p.stat().st_size == 0:
        raise FcnDeployError(f"{p}: file is empty (0 bytes); re-download or re-save it")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":  # torch.save writes a zip; legacy files are raw pickles
        raise FcnDeployError(f"{p}: not a PyTorch weights file (no zip or pickle header); give a .pt/.pth checkpoint")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"it needs {found.group(1)}" if found else "it holds objects other than tensors"
        raise FcnDeployError(
            f"{p}: refused to load: {what}; only tensors and plain containers are accepted "
            "(weights_only=True), never arbitrary pickles"
        ) from None
    except Exception as e:  # noqa: BLE001 - whatever a damaged file makes the unpickler raise (KeyError, ...)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FcnDeployError(f"{p}: corrupt or truncated PyTorch file ({msg[:160]}); re-download or re-save it") from None
