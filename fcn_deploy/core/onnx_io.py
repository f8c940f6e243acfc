"""Loading ONNX files we did not write ourselves: size cap, onnx.checker, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fcn_deploy.core.errors import FcnDeployError

MAX_MODEL_BYTES = 2 * 1024**3  # protobuf's own limit for a single-file model


def load_onnx(path: str | Path, full_check: bool = False) -> Any:
    """onnx.load + onnx.checker (onnx.load alone accepts a 0-byte file). Returns the ModelProto."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise FcnDeployError(f"{p}: no such ONNX file; check the path")
    size = p.stat().st_size
    if size == 0:
        raise FcnDeployError(f"{p}: ONNX file is empty (0 bytes); re-export it with `fcn-deploy export`")
    if size > MAX_MODEL_BYTES:
        raise FcnDeployError(f"{p}: {size / 1e9:.1f} GB is over the 2 GB single-file ONNX limit")
    try:
        model = onnx.load(str(p))
        onnx.checker.check_model(model, full_check=full_check)
    except Exception as e:  # protobuf DecodeError, ValidationError, ...: all mean a bad file
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise FcnDeployError(f"{p}: not a valid ONNX model ({msg}); re-export it") from None
    return model
