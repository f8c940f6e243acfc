"""Pick and open a backend for a model file: by suffix with `auto`, or the one the user names."""

from __future__ import annotations

import importlib
from pathlib import Path

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
DEVICES = ("cpu", "cuda")  # every backend's; open_backend also takes "auto", and PyTorch "cuda:N"
SUFFIXES = {
    ".onnx": "onnxruntime",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".pt": "torch",
    ".pth": "torch",
}


def backend_for(path: Path, backend: str = "auto") -> str:
    if backend not in BACKENDS:
        raise FcnDeployError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    by_suffix = SUFFIXES.get(path.suffix.lower())
    if backend == "auto":
        if by_suffix is None:
            raise FcnDeployError(
                f"{path}: unknown model type {path.suffix!r}; give a .onnx, .engine/.plan or .pt/.pth file"
            )
        return by_suffix
    if by_suffix is not None and by_suffix != backend:
        wanted = [s for s, b in SUFFIXES.items() if b == backend]
        raise FcnDeployError(
            f"{path}: a {path.suffix} file cannot run on --backend {backend} (it takes {'/'.join(wanted)}); "
            "use --backend auto"
        )
    return backend


def open_backend(
    model_path: str | Path, backend: str = "auto", device: str | None = None, trust_engine: bool = False
) -> Backend:
    """Open `model_path` on the chosen backend. TensorRT and torch are imported only when chosen.

    device None: cuda for TensorRT engines, cpu for everything else; "auto": a GPU where the backend sees one.
    trust_engine: run an engine whose manifest is missing or does not match (TensorRT checks it otherwise).
    """
    path = Path(model_path)
    if not path.is_file():
        raise FcnDeployError(f"{path}: no such model file (no such file or directory); check the path")
    kind = backend_for(path, backend)
    if kind == "onnxruntime":
        try:
            from fcn_deploy.runtime.ort_backend import OrtBackend
        except ImportError:
            raise MissingDependencyError(
                "onnxruntime is not installed; pip install 'fcn-deploy[cpu]' (or [gpu] for onnxruntime-gpu)"
            ) from None
        return OrtBackend(path, device=device or "cpu")
    if kind == "tensorrt":
        if device not in (None, "auto", "cuda"):
            raise FcnDeployError(f"{path}: a TensorRT engine runs on the GPU only; pass --device cuda")
        try:
            trt_backend = importlib.import_module("fcn_deploy.engine.backend")
        except ImportError as e:
            raise MissingDependencyError(
                f"{path}: the TensorRT backend is not available here ({e}); install TensorRT "
                "(JetPack or pip install 'fcn-deploy[tensorrt]') or run the .onnx with --backend onnxruntime"
            ) from None
        return trt_backend.TrtBackend(path, trust=trust_engine)
    from fcn_deploy.training.backend import TorchBackend

    return TorchBackend.from_checkpoint(path, device=device or "cpu")
