"""Pick and open a backend for a model file: by suffix with `auto`, or the one the user names."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError

BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino", "torch")
# The compute precision asked of a CPU runtime (int8 and fp16 live in the graph): bf16 needs --backend openvino.
PRECISIONS = ("fp32", "bf16")
ALSO_TAKES = {"openvino": (".onnx",)}  # backends that run a file type another backend is the default for
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
    if (
        by_suffix is not None
        and by_suffix != backend
        and path.suffix.lower() not in ALSO_TAKES.get(backend, ())
    ):
        wanted = [s for s, b in SUFFIXES.items() if b == backend] + list(ALSO_TAKES.get(backend, ()))
        raise FcnDeployError(
            f"{path}: a {path.suffix} file cannot run on --backend {backend} (it takes {'/'.join(wanted)}); "
            "use --backend auto"
        )
    return backend


def open_backend(
    model_path: str | Path,
    backend: str = "auto",
    device: str | None = None,
    trust_engine: bool = False,
    precision: str | None = None,
) -> Backend:
    """Open `model_path` on the chosen backend. TensorRT, OpenVINO and torch are imported only when chosen.

    device None: cuda for TensorRT engines, cpu for everything else; "auto": a GPU where the backend sees one.
    trust_engine: run an engine whose manifest is missing or does not match (TensorRT checks it otherwise).
    precision None: compute as the graph says (on OpenVINO an INT8 graph's float layers in BF16 on AMX CPUs,
    `openvino_backend.default_precision`); "fp32": float layers in FP32 everywhere; "bf16": OpenVINO on a CPU with
    AVX512-BF16 or AMX (`auto` picks OpenVINO for it). On the CPU `auto` picks the fastest installed runtime for a .onnx
    (fcn_deploy.runtime.cpu_auto) and logs which and why.
    """
    if isinstance(model_path, str) and model_path.startswith(("triton://", "triton+http://", "triton+grpc://")):
        if backend not in ("auto", "triton") or precision not in (None, "fp32"):
            raise FcnDeployError(f"{model_path}: a Triton server model takes --backend auto and FP32 only")
        from fcn_deploy.serving.client import TritonBackend  # the server decides the device

        return TritonBackend(model_path)
    path = Path(model_path)
    if not path.is_file():
        raise FcnDeployError(f"{path}: no such model file (no such file or directory); check the path")
    if precision not in (None, *PRECISIONS):
        raise FcnDeployError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    kind = backend_for(path, backend)
    if backend == "auto" and kind == "onnxruntime" and _on_cpu(device):
        from fcn_deploy.runtime.cpu_auto import choose_cpu_backend  # the measured rule (README)

        kind, why = choose_cpu_backend(path, precision)
        # Said aloud when it departs from the file-type default (ONNX Runtime), in --verbose otherwise.
        level = logging.INFO if kind != "onnxruntime" else logging.DEBUG
        logging.getLogger("fcn_deploy.backends").log(level, "--backend auto: %s for %s: %s", kind, path.name, why)
    if precision == "bf16" and kind != "openvino":
        raise FcnDeployError(
            f"--precision bf16: the {kind} backend does not compute in BF16; use --backend openvino on a .onnx"
        )
    if kind == "openvino":
        if device not in (None, "auto", "cpu"):
            raise FcnDeployError(f"{path}: the OpenVINO backend runs on the CPU only; pass --device cpu")
        from fcn_deploy.runtime.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(path, precision=precision)
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


def _on_cpu(device: str | None) -> bool:
    """Whether a .onnx opened with `device` runs on the CPU: cpu, or auto without ONNX Runtime's CUDA provider."""
    if device in (None, "cpu"):
        return True
    if device != "auto":
        return False
    try:
        import onnxruntime
    except ImportError:
        return True
    return "CUDAExecutionProvider" not in onnxruntime.get_available_providers()
