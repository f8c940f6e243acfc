"""Device memory, pinned host memory, streams, events and CUDA graphs through NVIDIA's cuda-python.

`cuda.bindings.runtime` works with CUDA 12.x and 13.x and imports without a GPU (calls then return
cudaErrorInsufficientDriver / cudaErrorNoDevice instead of raising). pycuda is not needed. Torch-free.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError

NO_GPU_CODES = (35, 100)  # cudaErrorInsufficientDriver, cudaErrorNoDevice
INSUFFICIENT_DRIVER = 35
# cuda-python's major must match the CUDA major the driver supports (13.x needs driver >= 580; JetPack 6's r36
# driver is CUDA 12.6): the pip spec that fits each driver major.
CUDA_PYTHON_FOR_DRIVER = {12: "cuda-python>=12.6,<13", 13: "cuda-python>=13,<14"}


class CudaError(FcnDeployError):
    """A CUDA runtime call failed (out of memory, bad launch...)."""


class NoGpuError(MissingDependencyError):
    """No NVIDIA driver or GPU here: like a missing TensorRT, exit code 3."""


def cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError:
        raise MissingDependencyError(
            "cuda-python (module `cuda.bindings.runtime`) is not installed; "
            "install it with `pip install 'fcn-deploy[tensorrt]'`, or the one matching the driver's CUDA major: "
            "`pip install 'cuda-python>=12.6,<13'` (JetPack 6, CUDA 12 drivers) / `'cuda-python>=13,<14'` "
            "(JetPack 7, driver >= 580)"
        ) from None
    return runtime


def call(name: str, *args: Any) -> Any:
    """Run cudart.<name>(*args); raise CudaError naming the call and the CUDA error; return its value(s)."""
    rt = cudart()
    result = getattr(rt, name)(*args)
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != rt.cudaError_t.cudaSuccess:
        code = int(err)
        what = f"CUDA call {name} failed: {getattr(err, 'name', err)} ({code})"
        if code == INSUFFICIENT_DRIVER and (mismatch := driver_mismatch()):
            raise NoGpuError(f"{mismatch} ({what})")
        if code in NO_GPU_CODES:
            raise NoGpuError(
                f"no usable NVIDIA GPU or driver on this machine ({what}); run on a desktop/server with an "
                "NVIDIA GPU and driver, or on a Jetson"
            )
        raise CudaError(what)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def cuda_python_version() -> str | None:
    """The installed cuda-python (cuda.bindings) version, or None."""
    try:
        from cuda import bindings

        version = getattr(bindings, "__version__", None)
        if version:
            return str(version)
    except ImportError:
        return None
    try:
        from importlib.metadata import version as dist_version

        return dist_version("cuda-bindings")
    except Exception:  # noqa: BLE001 - metadata is best effort
        return None


def format_cuda_version(encoded: int) -> str:
    """12060 -> '12.6'."""
    return f"{encoded // 1000}.{(encoded % 1000) // 10}"


def driver_mismatch() -> str | None:
    """'driver CUDA 12.6 is too old for cuda-python 13.0: ...' when cuda-python's major is newer than the driver's."""
    rt = cudart()
    err, driver = rt.cudaDriverGetVersion()
    version = cuda_python_version()
    if err != rt.cudaError_t.cudaSuccess or not version:
        return None
    if driver == 0:  # no driver at all: the plain "no usable GPU" message says it
        return None
    major = int(version.split(".")[0])
    if driver // 1000 >= major:
        return None
    spec = CUDA_PYTHON_FOR_DRIVER.get(driver // 1000, f"cuda-python<{major}")
    return (
        f"the NVIDIA driver (CUDA {format_cuda_version(driver)}) is too old for cuda-python {version} (CUDA {major}.x "
        f"needs a CUDA {major} driver, >= 580 for 13.x): install `pip install '{spec}'` (JetPack 6 / tensorrt-cu12), "
        "or upgrade the driver"
    )


def device_info(device: int = 0) -> tuple[str, tuple[int, int]]:
    """(GPU name, (major, minor) compute capability) of `device`."""
    prop = call("cudaGetDeviceProperties", device)
    name = (
        prop.name.split(b"\0", 1)[0].decode(errors="replace")
        if isinstance(prop.name, bytes)
        else str(prop.name)
    )
    return name, (int(prop.major), int(prop.minor))


def versions() -> dict[str, int]:
    """CUDA driver and runtime versions as CUDA encodes them (e.g. 12060 = 12.6)."""
    return {"driver": int(call("cudaDriverGetVersion")), "runtime": int(call("cudaRuntimeGetVersion"))}


class DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = int(call("cudaMalloc", max(self.nbytes, 1)))

    def free(self) -> None:
        if self.ptr:
            call("cudaFree", self.ptr)
            self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory with a numpy view, so host<->device copies can be asynchronous."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = int(call("cudaMallocHost", max(self.nbytes, 1)))
        self._raw = (ctypes.c_byte * max(self.nbytes, 1)).from_address(self.ptr)

    def view(self, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        return np.frombuffer(self._raw, dtype=dtype, count=count).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self._raw = None
            call("cudaFreeHost", self.ptr)
            self.ptr = 0


class Stream:
    def __init__(self) -> None:
        self.handle = call("cudaStreamCreate")

    def __int__(self) -> int:
        return int(self.handle)

    def copy_to_device(self, dst: int, src: int, nbytes: int) -> None:
        kind = cudart().cudaMemcpyKind.cudaMemcpyHostToDevice
        call("cudaMemcpyAsync", dst, src, nbytes, kind, self.handle)

    def copy_to_host(self, dst: int, src: int, nbytes: int) -> None:
        kind = cudart().cudaMemcpyKind.cudaMemcpyDeviceToHost
        call("cudaMemcpyAsync", dst, src, nbytes, kind, self.handle)

    def synchronize(self) -> None:
        call("cudaStreamSynchronize", self.handle)

    def destroy(self) -> None:
        if self.handle is not None:
            call("cudaStreamDestroy", self.handle)
            self.handle = None


class Event:
    def __init__(self) -> None:
        self.handle = call("cudaEventCreate")

    def record(self, stream: Stream) -> None:
        call("cudaEventRecord", self.handle, stream.handle)

    def elapsed_ms(self, start: Event) -> float:
        """Milliseconds between `start` and this event (synchronises on this event first)."""
        call("cudaEventSynchronize", self.handle)
        return float(call("cudaEventElapsedTime", start.handle, self.handle))

    def destroy(self) -> None:
        if self.handle is not None:
            call("cudaEventDestroy", self.handle)
            self.handle = None


class CudaGraph:
    """Replays the work captured on a stream (copies + TensorRT enqueue) with one launch."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.graph: Any = None
        self.exec: Any = None

    def begin(self) -> None:
        mode = cudart().cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        call("cudaStreamBeginCapture", self.stream.handle, mode)

    def end(self) -> None:
        self.graph = call("cudaStreamEndCapture", self.stream.handle)
        self.exec = call("cudaGraphInstantiate", self.graph, 0)

    def launch(self) -> None:
        call("cudaGraphLaunch", self.exec, self.stream.handle)

    def destroy(self) -> None:
        if self.exec is not None:
            call("cudaGraphExecDestroy", self.exec)
            self.exec = None
        if self.graph is not None:
            call("cudaGraphDestroy", self.graph)
            self.graph = None
