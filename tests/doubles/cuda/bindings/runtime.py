"""Contract double of `cuda.bindings.runtime`: the calls fcn-deploy makes, with the real return convention.

Every call returns a tuple whose first item is a cudaError_t (cuda-python never raises for CUDA errors). Device
memory is emulated (see _gpu_double): host code cannot dereference a device pointer, copies are bounds-checked,
work on a capturing stream is recorded into a graph instead of run, and each thread has its own current device.
"""



import ctypes as _ctypes
import enum as _enum

import _gpu_double as _g


class cudaError_t(_enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalState = 401
    cudaErrorNotReady = 600
    cudaErrorIllegalAddress = 700
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901


class cudaMemcpyKind(_enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStreamCaptureMode(_enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


class _Handle:
    __slots__ = ("_value",)

    def __init__(self, init_value: int = 0) -> None:
        self._value = int(init_value)

    def __int__(self) -> int:
        return self._value

    def getPtr(self) -> int:
        return self._value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._value:#x}>"


class cudaStream_t(_Handle):
    __slots__ = ()


class cudaEvent_t(_Handle):
    __slots__ = ()


class cudaGraph_t(_Handle):
    __slots__ = ()


class cudaGraphExec_t(_Handle):
    __slots__ = ()


class cudaDeviceProp:
    __slots__ = ("name", "major", "minor", "totalGlobalMem", "multiProcessorCount")

    def __init__(self) -> None:
        self.name, self.major, self.minor, self.totalGlobalMem, self.multiProcessorCount = b"", 0, 0, 0, 0


_E = cudaError_t


def _int(value, what: str) -> int:
    if isinstance(value, _Handle):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Argument '{what}' is not instance of type (expected <class 'int'>, found {type(value)})")
    return value


def _check():
    err = _g.driver_error()
    return _E(err) if err else None


def _handle(value, table: str, kind: type):
    if value is None:
        return None
    if not isinstance(value, (kind, int)) or isinstance(value, bool):
        raise TypeError(f"Argument is not instance of type (expected {kind}, found {type(value)})")
    return _g.state()[table].get(int(value))


def _kind(value, enum_type, what: str):
    if not isinstance(value, enum_type):
        raise TypeError(f"Argument '{what}' is not instance of type (expected {enum_type}, found {type(value)})")
    return value


# --- versions, devices ----------------------------------------------------------------------------------
def cudaDriverGetVersion():
    return (_E.cudaSuccess, _g.state()["driver"])


def cudaRuntimeGetVersion():
    major, minor = (int(x) for x in _g.state()["cuda_python"].split(".")[:2])
    return (_E.cudaSuccess, major * 1000 + minor * 10)


def cudaGetDeviceCount():
    if err := _check():
        return (err, 0)
    return (_E.cudaSuccess, len(_g.state()["devices"]))


def cudaSetDevice(device):
    device = _int(device, "device")
    if err := _check():
        return (err,)
    if not 0 <= device < len(_g.state()["devices"]):
        return (_E.cudaErrorInvalidDevice,)
    _g.set_current_device(device)
    return (_E.cudaSuccess,)


def cudaGetDevice():
    if err := _check():
        return (err, 0)
    return (_E.cudaSuccess, _g.current_device())


def cudaGetDeviceProperties(device):
    device = _int(device, "device")
    if err := _check():
        return (err, None)
    devices = _g.state()["devices"]
    if not 0 <= device < len(devices):
        return (_E.cudaErrorInvalidDevice, None)
    prop = cudaDeviceProp()
    d = devices[device]
    prop.name = d.name.encode() + b"\0" * (256 - len(d.name))
    prop.major, prop.minor = d.cc
    prop.totalGlobalMem = 8 << 30
    return (_E.cudaSuccess, prop)


# --- memory ---------------------------------------------------------------------------------------------
def cudaMalloc(size):
    size = _int(size, "size")
    if err := _check():
        return (err, 0)
    if size < 0:
        return (_E.cudaErrorInvalidValue, 0)
    return (_E.cudaSuccess, _g.malloc(size))


def cudaFree(devPtr):
    ptr = _int(devPtr, "devPtr")
    if err := _check():
        return (err,)
    if ptr == 0:
        return (_E.cudaSuccess,)
    if _g.state()["allocations"].pop(ptr, None) is None:
        return (_E.cudaErrorInvalidValue,)
    return (_E.cudaSuccess,)


def cudaMallocHost(size):
    size = _int(size, "size")
    if err := _check():
        return (err, 0)
    buf = _ctypes.create_string_buffer(max(size, 1))
    ptr = _ctypes.addressof(buf)
    _g.state()["pinned"][ptr] = (buf, size)
    return (_E.cudaSuccess, ptr)


def cudaFreeHost(ptr):
    ptr = _int(ptr, "ptr")
    if err := _check():
        return (err,)
    if _g.state()["pinned"].pop(ptr, None) is None:
        return (_E.cudaErrorInvalidValue,)
    return (_E.cudaSuccess,)


def _pinned_fits(ptr: int, nbytes: int) -> bool:
    for base, (_buf, size) in _g.state()["pinned"].items():
        if base <= ptr and ptr + nbytes <= base + size:
            return True
    return False


def cudaMemcpyAsync(dst, src, count, kind, stream):
    dst, src, count = _int(dst, "dst"), _int(src, "src"), _int(count, "count")
    kind = _kind(kind, cudaMemcpyKind, "kind")
    if err := _check():
        return (err,)
    s = _handle(stream, "streams", cudaStream_t)
    if stream is not None and int(stream) and s is None:
        return (_E.cudaErrorInvalidResourceHandle,)
    if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
        if _g.find(dst, count) is None or not _pinned_fits(src, count):
            return (_E.cudaErrorInvalidValue,)

        def work(dst=dst, src=src, count=count):
            _g.write(dst, _ctypes.string_at(src, count))
    elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
        if _g.find(src, count) is None or not _pinned_fits(dst, count):
            return (_E.cudaErrorInvalidValue,)

        def work(dst=dst, src=src, count=count):
            _ctypes.memmove(dst, _g.read(src, count), count)
    else:
        return (_E.cudaErrorInvalidValue,)  # fcn-deploy copies only host<->device
    _g.enqueue(int(stream or 0), work)
    return (_E.cudaSuccess,)


# --- streams, events, graphs ----------------------------------------------------------------------------
def cudaStreamCreate():
    if err := _check():
        return (err, None)
    handle = _g.new_handle()
    _g.state()["streams"][handle] = _g.Stream(handle, _g.current_device())
    return (_E.cudaSuccess, cudaStream_t(handle))


def cudaStreamSynchronize(stream):
    if err := _check():
        return (err,)
    s = _handle(stream, "streams", cudaStream_t)
    if s is None and stream is not None and int(stream):
        return (_E.cudaErrorInvalidResourceHandle,)
    if s is not None and s.capturing:
        return (_E.cudaErrorStreamCaptureUnsupported,)
    return (_E.cudaSuccess,)


def cudaStreamDestroy(stream):
    if err := _check():
        return (err,)
    if _g.state()["streams"].pop(int(stream), None) is None:
        return (_E.cudaErrorInvalidResourceHandle,)
    return (_E.cudaSuccess,)


def cudaStreamBeginCapture(stream, mode):
    _kind(mode, cudaStreamCaptureMode, "mode")
    if err := _check():
        return (err,)
    s = _handle(stream, "streams", cudaStream_t)
    if s is None:
        return (_E.cudaErrorStreamCaptureUnsupported,)  # the legacy default stream cannot be captured
    if s.capturing:
        return (_E.cudaErrorIllegalState,)
    s.capturing, s.captured = True, []
    return (_E.cudaSuccess,)


def cudaStreamEndCapture(stream):
    if err := _check():
        return (err, None)
    s = _handle(stream, "streams", cudaStream_t)
    if s is None or not s.capturing:
        return (_E.cudaErrorInvalidValue, None)
    s.capturing = False
    handle = _g.new_handle()
    _g.state()["graphs"][handle] = list(s.captured)
    s.captured = []
    return (_E.cudaSuccess, cudaGraph_t(handle))


def cudaGraphInstantiate(graph, flags):
    _int(flags, "flags")
    if err := _check():
        return (err, None)
    work = _handle(graph, "graphs", cudaGraph_t)
    if work is None:
        return (_E.cudaErrorInvalidValue, None)
    handle = _g.new_handle()
    _g.state()["execs"][handle] = list(work)
    return (_E.cudaSuccess, cudaGraphExec_t(handle))


def cudaGraphLaunch(graphExec, stream):
    if err := _check():
        return (err,)
    work = _handle(graphExec, "execs", cudaGraphExec_t)
    if work is None:
        return (_E.cudaErrorInvalidResourceHandle,)
    try:
        for item in work:
            _g.enqueue(int(stream or 0), item)
    except MemoryError:  # the graph replays pointers that were freed since it was captured
        return (_E.cudaErrorIllegalAddress,)
    return (_E.cudaSuccess,)


def cudaGraphExecDestroy(graphExec):
    if _g.state()["execs"].pop(int(graphExec), None) is None:
        return (_E.cudaErrorInvalidResourceHandle,)
    return (_E.cudaSuccess,)


def cudaGraphDestroy(graph):
    if _g.state()["graphs"].pop(int(graph), None) is None:
        return (_E.cudaErrorInvalidResourceHandle,)
    return (_E.cudaSuccess,)


def cudaEventCreate():
    if err := _check():
        return (err, None)
    handle = _g.new_handle()
    _g.state()["events"][handle] = None
    return (_E.cudaSuccess, cudaEvent_t(handle))


def cudaEventRecord(event, stream):
    if err := _check():
        return (err,)
    if int(event) not in _g.state()["events"]:
        return (_E.cudaErrorInvalidResourceHandle,)
    if _g.capturing(int(stream or 0)):
        return (_E.cudaErrorStreamCaptureUnsupported,)  # fcn-deploy records its timing events outside captures
    _g.state()["events"][int(event)] = _g.now_ms()
    return (_E.cudaSuccess,)


def cudaEventSynchronize(event):
    if err := _check():
        return (err,)
    if int(event) not in _g.state()["events"]:
        return (_E.cudaErrorInvalidResourceHandle,)
    return (_E.cudaSuccess,)


def cudaEventElapsedTime(start, end):
    if err := _check():
        return (err, 0.0)
    events = _g.state()["events"]
    if int(start) not in events or int(end) not in events:
        return (_E.cudaErrorInvalidResourceHandle, 0.0)
    t0, t1 = events[int(start)], events[int(end)]
    if t0 is None or t1 is None:
        return (_E.cudaErrorInvalidResourceHandle, 0.0)
    return (_E.cudaSuccess, float(t1 - t0))


def cudaEventDestroy(event):
    if _g.state()["events"].pop(int(event), "missing") == "missing":
        return (_E.cudaErrorInvalidResourceHandle,)
    return (_E.cudaSuccess,)
