"""The environment fingerprint stored beside every timing: what ran, on what, under how much other load.

Torch-free and import-free: library versions are read from modules that are already loaded (the versions that
actually ran), never by importing one. The GPU part needs cuda-python, which the foundation may not import: the
caller (fcn_deploy.profile) passes it in.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from typing import Any

# The instruction-set extensions that decide INT8/BF16 speed on a CPU (ONNX Runtime picks VNNI/AMX kernels).
CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16")
LIBRARIES = ("numpy", "onnx", "onnxruntime", "torch", "tensorrt", "cv2")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. under taskset or a container's cpuset), not the
    machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def cpu_model(lines: list[str] | None = None) -> str:
    for line in _cpuinfo() if lines is None else lines:
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags(lines: list[str] | None = None) -> dict[str, bool] | None:
    """Which of CPU_FLAGS the first CPU has; None where /proc/cpuinfo lists no flags (not Linux x86)."""
    for line in _cpuinfo() if lines is None else lines:
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return {flag: flag in present for flag in CPU_FLAGS}
    return None


def library_versions() -> dict[str, str]:
    """Python and the versions of the LIBRARIES this process has already imported."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        module = sys.modules.get(name)
        if module is not None:
            out[name] = str(getattr(module, "__version__", "unknown"))
    return out


def tensorrt_version() -> str | None:
    """The installed TensorRT (from package metadata, without importing it), None when absent."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        return importlib.metadata.version("tensorrt")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def thread_settings() -> dict[str, str]:
    out = {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ}
    torch = sys.modules.get("torch")  # only when already loaded: the fingerprint must not pull torch in
    if torch is not None:
        out["torch_intra_op"] = str(torch.get_num_threads())
    return out


def fingerprint(gpu: dict[str, Any] | None = None) -> dict[str, Any]:
    """The machine and software a measurement ran on; `gpu` comes from the caller (None: no GPU used)."""
    lines = _cpuinfo()
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model(lines),
        "cpu_flags": cpu_flags(lines),
        "cpu_count": os.cpu_count(),
        "cpu_threads_available": usable_cores(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "thread_env": thread_settings(),
        "libraries": library_versions(),
        "gpu": gpu,
        "tensorrt": tensorrt_version(),
    }
