"""The emulated machine shared by the `tensorrt` and `cuda` contract doubles (not part of either real API).

Configured by environment variables, read when first used (reset() re-reads them):
- FCN_DEPLOY_TRT_DOUBLE_VERSION: the TensorRT release the `tensorrt` double behaves as ("10.3.0", "11.4.1").
- FCN_DEPLOY_CUDA_DOUBLE_VERSION: the cuda-python release ("12.6.2" or "13.0.3"; default 12.6.2).
- FCN_DEPLOY_CUDA_DOUBLE_DRIVER: the CUDA version the driver supports, CUDA-encoded (12060 = r36 on JetPack 6,
  13000 = r580); cuda-python 13.x on a 12.x driver fails every call with cudaErrorInsufficientDriver (35).
- FCN_DEPLOY_CUDA_DOUBLE_DEVICES: "NAME:MAJOR.MINOR[:dla=N]" separated by ";" ("" = no GPU, every call 100).

Device memory lives in host bytearrays addressed by fake device pointers that the host cannot dereference; every
copy is checked against the allocation it touches (cudaErrorInvalidValue when it does not fit).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass, field

DEFAULT_DEVICES = "NVIDIA RTX A2000 (contract double):8.6"
DEVICE_BASE = 0x7F00_0000_0000  # fake device addresses: far from anything the host maps


@dataclass
class Device:
    name: str
    cc: tuple[int, int]
    dla_cores: int = 0


@dataclass
class Allocation:
    base: int
    size: int
    device: int
    data: bytearray


@dataclass
class Stream:
    handle: int
    device: int
    capturing: bool = False
    captured: list = field(default_factory=list)


_lock = threading.Lock()
_tls = threading.local()
STATE: dict = {}


def parse_devices(text: str) -> list[Device]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        parts = item.split(":")
        major, minor = (int(x) for x in parts[1].split("."))
        dla = 0
        for extra in parts[2:]:
            if extra.startswith("dla="):
                dla = int(extra[4:])
        out.append(Device(parts[0], (major, minor), dla))
    return out


def reset() -> None:
    with _lock:
        STATE.clear()
        STATE.update(
            trt_version=os.environ.get("FCN_DEPLOY_TRT_DOUBLE_VERSION", "10.3.0"),
            cuda_python=os.environ.get("FCN_DEPLOY_CUDA_DOUBLE_VERSION", "12.6.2"),
            driver=int(os.environ.get("FCN_DEPLOY_CUDA_DOUBLE_DRIVER", "12060")),
            devices=parse_devices(os.environ.get("FCN_DEPLOY_CUDA_DOUBLE_DEVICES", DEFAULT_DEVICES)),
            allocations={},
            pinned={},
            streams={},
            events={},
            graphs={},
            execs={},
            next_ptr=itertools.count(DEVICE_BASE, 1 << 20),
            next_handle=itertools.count(0x1000, 0x10),
        )


def state() -> dict:
    if not STATE:
        reset()
    return STATE


def current_device() -> int:
    return getattr(_tls, "device", 0)


def set_current_device(device: int) -> None:
    _tls.device = device


def driver_error() -> int:
    """0, or the CUDA error every call returns on this machine (35: driver too old, 100: no device)."""
    s = state()
    if int(s["cuda_python"].split(".")[0]) * 1000 > s["driver"]:
        return 35
    if not s["devices"]:
        return 100
    return 0


def new_handle() -> int:
    return next(state()["next_handle"])


def malloc(size: int) -> int:
    s = state()
    ptr = next(s["next_ptr"])
    s["allocations"][ptr] = Allocation(ptr, int(size), current_device(), bytearray(int(size)))
    return ptr


def find(ptr: int, nbytes: int) -> tuple[Allocation, int] | None:
    """(allocation, offset) holding [ptr, ptr + nbytes), or None."""
    for alloc in state()["allocations"].values():
        if alloc.base <= ptr < alloc.base + max(alloc.size, 1):
            off = ptr - alloc.base
            return (alloc, off) if off + nbytes <= alloc.size else None
    return None


def read(ptr: int, nbytes: int) -> bytes:
    hit = find(ptr, nbytes)
    if hit is None:
        raise MemoryError(f"illegal device read of {nbytes} bytes at {ptr:#x}")
    alloc, off = hit
    return bytes(alloc.data[off : off + nbytes])


def write(ptr: int, payload: bytes) -> None:
    hit = find(ptr, len(payload))
    if hit is None:
        raise MemoryError(f"illegal device write of {len(payload)} bytes at {ptr:#x}")
    alloc, off = hit
    alloc.data[off : off + len(payload)] = payload


def enqueue(stream_handle: int, work) -> None:
    """Run `work` now, or record it when the stream is being captured into a CUDA graph."""
    stream = state()["streams"].get(int(stream_handle)) if stream_handle else None
    if stream is not None and stream.capturing:
        stream.captured.append(work)
    else:
        work()


def capturing(stream_handle: int) -> bool:
    stream = state()["streams"].get(int(stream_handle)) if stream_handle else None
    return bool(stream and stream.capturing)


def now_ms() -> float:
    return time.perf_counter() * 1000.0
