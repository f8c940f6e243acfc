"""Contract double of TensorRT's Python bindings (the subset fcn-deploy uses), for CPU-only CI.

Strict by construction: every public name here exists in the real 10.3 and 11.x bindings (tests check that
against the real wheels); objects refuse unknown attributes (AttributeError), wrong argument types and counts
(TypeError), and the documented runtime rules are enforced: a network is strongly typed on 11.x and with the
STRONGLY_TYPED bit on 10.x, precision flags are refused on a strongly typed network (and absent on 11.x),
profiles must hold every dynamic input, input shapes must be set before output shapes are read, every I/O
address must be set (to device memory large enough) before execute_async_v3, plans only load in the TensorRT
version and on the compute capability that built them, and a plan with embedded host code (VERSION_COMPATIBLE
without EXCLUDE_LEAN_RUNTIME) loads only with `Runtime.engine_host_code_allowed = True`.

"Building" parses the ONNX (onnx.checker, operator support) and serialises it into the plan. "Executing" runs
that ONNX with ONNX Runtime on the CPU (a Q/DQ graph runs as the fake-quant graph it is) on device memory emulated
by `_gpu_double`. Nothing here says anything about TensorRT's speed or numerics.

Version: FCN_DEPLOY_TRT_DOUBLE_VERSION ("10.3.0" default, or "11.4.1").
"""

import enum as _enum
import json as _json
import os as _os
import struct as _struct
import time as _time
import weakref as _weakref

import _gpu_double as _g

__version__ = _g.state()["trt_version"]
_V = tuple(int(x) for x in __version__.split(".")[:3])
_MAJOR = _V[0]
_MAGIC = b"FTRTDBL1"

# ---------------------------------------------------------------------------------------------- enums
# Values are those of the real bindings of each release.
_BUILDER_FLAGS_10 = {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "TF32": 6,
                     "VERSION_COMPATIBLE": 13, "EXCLUDE_LEAN_RUNTIME": 14}  # fmt: skip
_BUILDER_FLAGS_11 = {"DEBUG": 2, "GPU_FALLBACK": 3, "TF32": 6, "VERSION_COMPATIBLE": 12, "EXCLUDE_LEAN_RUNTIME": 13}

BuilderFlag = _enum.IntEnum("BuilderFlag", _BUILDER_FLAGS_10 if _MAJOR == 10 else _BUILDER_FLAGS_11)
NetworkDefinitionCreationFlag = _enum.IntEnum(
    "NetworkDefinitionCreationFlag",
    {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if _MAJOR == 10 else {"STRONGLY_TYPED": 0},
)
DataType = _enum.IntEnum(
    "DataType",
    {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5, "FP8": 6, "BF16": 7, "INT64": 8, "INT4": 9},
)
TensorIOMode = _enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
DeviceType = _enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
MemoryPoolType = _enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1, "DLA_LOCAL_DRAM": 2,
                                                  "DLA_GLOBAL_DRAM": 3, "TACTIC_DRAM": 4})  # fmt: skip
ExecutionContextAllocationStrategy = _enum.IntEnum(
    "ExecutionContextAllocationStrategy", {"STATIC": 0, "ON_PROFILE_CHANGE": 1, "USER_MANAGED": 2}
)

_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 9: "BOOL", 2: "UINT8", 7: "INT64", 16: "BF16"}
_ITEMSIZE = {"FLOAT": 4, "HALF": 2, "INT8": 1, "INT32": 4, "BOOL": 1, "UINT8": 1, "INT64": 8, "BF16": 2}
_NP = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "BOOL": "bool", "UINT8": "uint8",
       "INT64": "int64"}  # fmt: skip
# Operators the TensorRT ONNX parser imports (onnx-tensorrt's operators.md, the ones an FCN can contain).
_SUPPORTED_OPS = frozenset(
    "Abs Add ArgMax AveragePool BatchNormalization Cast Clip Concat Constant ConstantOfShape Conv ConvTranspose Div "
    "DequantizeLinear Dropout Equal Expand Flatten Gather Gemm GlobalAveragePool Identity LeakyRelu MatMul Max "
    "MaxPool Min Mul Pad QuantizeLinear Range ReduceMax ReduceMean Relu Reshape Resize Shape Sigmoid Slice "
    "Softmax Split Squeeze Sub Tanh TopK Transpose Unsqueeze Where".split()
)
_MAX_OPSET = 20 if _MAJOR == 10 else 24


def _strict_type(value, kind, what):
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{what}(): incompatible function arguments: expected {kind}, got {type(value).__name__}")
    return value


def _enum_arg(value, kind, what):
    if not isinstance(value, kind):
        raise TypeError(f"{what}(): incompatible function arguments: expected tensorrt.{kind.__name__}, "
                        f"got {type(value).__name__} {value!r}")  # fmt: skip
    return value


class Dims(tuple):
    """A shape; -1 marks a dimension only known at run _time."""

    MAX_DIMS = 8

    def __new__(cls, shape=()):
        dims = tuple(int(d) for d in shape)
        if len(dims) > cls.MAX_DIMS:
            raise ValueError(f"Dims: at most {cls.MAX_DIMS} dimensions")
        return super().__new__(cls, dims)


def _dims_arg(value, what) -> Dims:
    if not isinstance(value, (tuple, list)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise TypeError(f"{what}(): incompatible function arguments: shape must be a tuple/list of int or Dims")
    return Dims(value)


class IHostMemory(bytes):
    """The serialized plan / timing cache: supports the buffer protocol like the real one."""

    __slots__ = ()

    @property
    def nbytes(self) -> int:
        return len(self)

    @property
    def dtype(self):
        return DataType.UINT8


# -------------------------------------------------------------------------------------------- logging
_Severity = _enum.IntEnum("Severity", {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4})


class ILogger:
    Severity = _Severity
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (_Severity(i) for i in range(5))

    def __init__(self) -> None:
        self._trt_initialised = True

    def log(self, severity, msg) -> None:
        raise RuntimeError('Tried to call pure virtual function "ILogger::log"')


def _emit(logger, severity: str, msg: str) -> None:
    logger.log(ILogger.Severity[severity], msg)  # real TensorRT sends every message; ILogger subclasses filter


def _check_logger(logger, what):
    if not isinstance(logger, ILogger):
        raise TypeError(f"{what}(): incompatible constructor arguments: logger must be a tensorrt.ILogger")
    if not getattr(logger, "_trt_initialised", False):
        raise TypeError(f"{what}: ILogger.__init__() must be called when overriding __init__")


class IProfiler:
    def __init__(self) -> None:
        self._trt_initialised = True

    def report_layer_time(self, layer_name, ms) -> None:
        raise RuntimeError('Tried to call pure virtual function "IProfiler::report_layer_time"')


class _Strict:
    """pybind11 objects take no new attributes: a typo (config.dla_core = 1) is an AttributeError."""

    __slots__ = ()


# ------------------------------------------------------------------------------------------- network
class ITensor(_Strict):
    __slots__ = ("_name", "_dtype", "_shape")

    def __init__(self, name, dtype, shape) -> None:
        self._name, self._dtype, self._shape = name, dtype, shape

    name = property(lambda self: self._name)
    dtype = property(lambda self: self._dtype)
    shape = property(lambda self: self._shape)


class INetworkDefinition(_Strict):
    __slots__ = ("_flags", "_strongly_typed", "_inputs", "_outputs", "_onnx", "_parser", "_nodes", "__weakref__")

    def __init__(self, flags: int) -> None:
        self._flags = flags
        bit = 1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        self._strongly_typed = _MAJOR >= 11 or bool(flags & bit)
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._onnx: bytes | None = None
        self._parser = None
        self._nodes: list[str] = []

    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))
    num_layers = property(lambda self: len(self._nodes))

    def get_input(self, index):
        _strict_type(index, int, "get_input")
        return self._inputs[index] if 0 <= index < len(self._inputs) else None

    def get_output(self, index):
        _strict_type(index, int, "get_output")
        return self._outputs[index] if 0 <= index < len(self._outputs) else None


class ParserError(_Strict):
    __slots__ = ("_code", "_desc", "_node", "_name", "_op")

    def __init__(self, desc, node=-1, name="", op="") -> None:
        self._code, self._desc, self._node, self._name, self._op = 8, desc, node, name, op

    def code(self):
        return self._code

    def desc(self):
        return self._desc

    def node(self):
        return self._node

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op

    def file(self):
        return "ModelImporter.cpp"

    def func(self):
        return "parseGraph"

    def line(self):
        return 0


class OnnxParser(_Strict):
    __slots__ = ("_network", "_logger", "_errors", "__weakref__")

    def __init__(self, network, logger) -> None:
        _strict_type(network, INetworkDefinition, "OnnxParser")
        _check_logger(logger, "OnnxParser")
        self._network, self._logger, self._errors = network, logger, []

    num_errors = property(lambda self: len(self._errors))

    def get_error(self, index):
        _strict_type(index, int, "get_error")
        return self._errors[index] if 0 <= index < len(self._errors) else None

    def clear_errors(self):
        self._errors = []

    def parse_from_file(self, model):
        _strict_type(model, str, "parse_from_file")
        import onnx

        try:
            proto = onnx.load(model)  # external data resolved beside the file, as the real parser does
        except Exception as e:  # noqa: BLE001 - the real parser reports, it does not raise
            self._errors.append(ParserError(f"Failed to parse ONNX model from file: {model}: {e}"))
            return False
        return self._import(proto)

    def parse(self, model, path=None):
        import onnx

        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as e:  # noqa: BLE001
            self._errors.append(ParserError(f"Failed to parse ONNX model: {e}"))
            return False
        return self._import(proto)

    def _import(self, proto) -> bool:
        import onnx

        net = self._network
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as e:
            self._errors.append(ParserError(f"ONNX checker failed: {' '.join(str(e).split())[:300]}"))
            return False
        opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset > _MAX_OPSET:
            self._errors.append(ParserError(f"Unsupported ONNX opset {opset}: TensorRT {__version__} parses up "
                                            f"to opset {_MAX_OPSET}"))  # fmt: skip
            return False
        for i, node in enumerate(proto.graph.node):
            if node.domain not in ("", "ai.onnx") or node.op_type not in _SUPPORTED_OPS:
                self._errors.append(ParserError(
                    f"No importer registered for op: {node.op_type}. Attempting to import as plugin.", i,
                    node.name, node.op_type))  # fmt: skip
        if self._errors:
            return False
        inits = {t.name for t in proto.graph.initializer}
        has_fp16 = False
        for vi_list, target in ((proto.graph.input, net._inputs), (proto.graph.output, net._outputs)):
            for vi in vi_list:
                if vi.name in inits:
                    continue
                tt = vi.type.tensor_type
                dtype = _ONNX_TO_TRT.get(tt.elem_type)
                if dtype is None:
                    self._errors.append(ParserError(f"tensor {vi.name}: unsupported data type {tt.elem_type}"))
                    return False
                shape = Dims(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
                target.append(ITensor(vi.name, DataType[dtype], shape))
        has_fp16 = any(t.data_type == 10 for t in proto.graph.initializer)
        if has_fp16 and not net._strongly_typed:
            _emit(self._logger, "WARNING", "FP16 weights in a weakly typed network: TensorRT picks the precision")
        net._onnx = proto.SerializeToString()
        net._nodes = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(proto.graph.node)]
        net._parser = _weakref.ref(self)  # the parser owns the weights: it must outlive the build
        return True


# ------------------------------------------------------------------------------------------- builder
class IOptimizationProfile(_Strict):
    __slots__ = ("_shapes", "_valid")

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[Dims, Dims, Dims]] = {}
        self._valid = True

    def set_shape(self, input, min, opt, max):  # noqa: A002 - the real parameter names
        _strict_type(input, str, "set_shape")
        lo, mid, hi = (_dims_arg(d, "set_shape") for d in (min, opt, max))
        if not (len(lo) == len(mid) == len(hi)) or not all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=False)):
            self._valid = False  # the real one logs and leaves the profile invalid
            return
        if any(d < 0 for d in lo):
            self._valid = False
            return
        self._shapes[input] = (lo, mid, hi)

    def get_shape(self, input):  # noqa: A002
        return list(self._shapes.get(input, ()))


class ITimingCache(_Strict):
    __slots__ = ("_key", "_entries")

    def __init__(self, key: str, entries: dict) -> None:
        self._key, self._entries = key, entries

    def serialize(self):
        return IHostMemory(b"FTRTTC1\n" + _json.dumps({"key": self._key, "entries": self._entries}).encode())


def _device_key() -> str:
    dev = _g.state()["devices"][_g.current_device()]
    return f"{__version__}/sm_{dev.cc[0]}{dev.cc[1]}"


class IBuilderConfig(_Strict):
    __slots__ = ("_pools", "_level", "_profiles", "_flags", "_device_type", "_dla_core", "_cache", "_builder")

    def __init__(self, builder) -> None:
        self._pools: dict = {}
        self._level = 3
        self._profiles: list[IOptimizationProfile] = []
        self._flags: set = set()
        self._device_type = DeviceType.GPU
        self._dla_core = -1
        self._cache: ITimingCache | None = None
        self._builder = builder

    def set_memory_pool_limit(self, pool, pool_size):
        _enum_arg(pool, MemoryPoolType, "set_memory_pool_limit")
        _strict_type(pool_size, int, "set_memory_pool_limit")
        self._pools[pool] = pool_size

    def get_memory_pool_limit(self, pool):
        _enum_arg(pool, MemoryPoolType, "get_memory_pool_limit")
        return self._pools.get(pool, 8 << 30)

    @property
    def builder_optimization_level(self):
        return self._level

    @builder_optimization_level.setter
    def builder_optimization_level(self, value):
        _strict_type(value, int, "builder_optimization_level")
        if not 0 <= value <= 5:
            _emit(self._builder._logger, "ERROR", f"Parameter check failed: builder optimization level {value}")
            return
        self._level = value

    def add_optimization_profile(self, profile):
        _strict_type(profile, IOptimizationProfile, "add_optimization_profile")
        if not profile._valid or not profile._shapes:
            _emit(self._builder._logger, "ERROR", "IBuilderConfig::addOptimizationProfile: profile is invalid")
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    num_optimization_profiles = property(lambda self: len(self._profiles))

    def create_timing_cache(self, serialized_timing_cache):
        data = bytes(memoryview(serialized_timing_cache))
        if not data:
            return ITimingCache(_device_key(), {})
        if not data.startswith(b"FTRTTC1\n"):
            _emit(self._builder._logger, "ERROR", "Failed to deserialize the timing cache: corrupted")
            return None
        body = _json.loads(data[8:])
        return ITimingCache(body["key"], body["entries"])

    def set_timing_cache(self, cache, ignore_mismatch):
        _strict_type(cache, ITimingCache, "set_timing_cache")
        _strict_type(ignore_mismatch, bool, "set_timing_cache")
        if cache._key != _device_key() and not ignore_mismatch:
            _emit(self._builder._logger, "WARNING", "Timing cache was created by a different TensorRT or device")
            return False
        self._cache = cache
        return True

    def get_timing_cache(self):
        return self._cache

    def set_flag(self, flag):
        self._flags.add(_enum_arg(flag, BuilderFlag, "set_flag"))

    def clear_flag(self, flag):
        self._flags.discard(_enum_arg(flag, BuilderFlag, "clear_flag"))

    def get_flag(self, flag):
        return _enum_arg(flag, BuilderFlag, "get_flag") in self._flags

    @property
    def default_device_type(self):
        return self._device_type

    @default_device_type.setter
    def default_device_type(self, value):
        self._device_type = _enum_arg(value, DeviceType, "default_device_type")

    @property
    def DLA_core(self):
        return self._dla_core

    @DLA_core.setter
    def DLA_core(self, value):
        self._dla_core = _strict_type(value, int, "DLA_core")


def _dla_cores() -> int:
    dev = _g.state()["devices"][_g.current_device()]
    has = (_MAJOR == 10 and _V[:2] <= (10, 7)) or _V >= (11, 4, 1)
    return dev.dla_cores if has else 0


class Builder(_Strict):
    __slots__ = ("_logger",)

    def __init__(self, logger) -> None:
        _check_logger(logger, "Builder")
        err = _g.driver_error()
        if err:
            _emit(logger, "ERROR", f"CUDA initialization failure with error: {err}. Please check your CUDA "
                                   "installation: http://docs.nvidia.com/cuda/cuda-installation-guide-linux/index.html")  # fmt: skip
            raise TypeError("pybind11::init(): factory function returned nullptr")
        self._logger = logger

    num_DLA_cores = property(lambda self: _dla_cores())

    def create_network(self, flags=0):
        _strict_type(flags, int, "create_network")
        known = 0
        for member in NetworkDefinitionCreationFlag:
            known |= 1 << int(member)
        if flags & ~known:
            _emit(self._logger, "ERROR", f"createNetworkV2: invalid network creation flags {flags:#x}")
            return None
        return INetworkDefinition(flags)

    def create_builder_config(self):
        return IBuilderConfig(self)

    def create_optimization_profile(self):
        return IOptimizationProfile()

    def build_serialized_network(self, network, config):
        _strict_type(network, INetworkDefinition, "build_serialized_network")
        _strict_type(config, IBuilderConfig, "build_serialized_network")
        log = self._logger
        if network._onnx is None:
            _emit(log, "ERROR", "Network has no inputs/layers: nothing to build")
            return None
        if network._parser is not None and network._parser() is None:
            _emit(log, "ERROR", "Network weights were released with their OnnxParser before the build (use after free)")
            return None
        if network._strongly_typed:
            for name in ("FP16", "INT8", "BF16", "FP8"):
                if _MAJOR == 10 and getattr(BuilderFlag, name, None) in config._flags:
                    _emit(log, "ERROR", f"BuilderFlag::k{name} is not allowed with a strongly typed network")
                    return None
        dynamic = [t for t in network._inputs if any(d < 0 for d in t.shape)]
        profiles = config._profiles
        if dynamic and not profiles:
            _emit(log, "ERROR", f"Network has dynamic or shape inputs, but no optimization profile has been "
                                f"defined: {dynamic[0].name}")  # fmt: skip
            return None
        for profile in profiles:
            for t in dynamic:
                if t.name not in profile._shapes:
                    _emit(log, "ERROR", f"{t.name}: dynamic input is missing dimensions in profile 0")
                    return None
            for name, (lo, _opt, hi) in profile._shapes.items():
                t = next((t for t in network._inputs if t.name == name), None)
                if t is None:
                    _emit(log, "ERROR", f"optimization profile names {name}, which is not a network input")
                    return None
                if len(lo) != len(t.shape) or any(s >= 0 and (a != s or b != s) for s, a, b in zip(t.shape, lo, hi, strict=False)):
                    _emit(log, "ERROR", f"{name}: profile dimensions {tuple(lo)}..{tuple(hi)} do not match "
                                        f"the network input {tuple(t.shape)}")  # fmt: skip
                    return None
        dla_core, dla_layers = None, 0
        if config._device_type == DeviceType.DLA:
            cores = _dla_cores()
            if cores == 0:
                _emit(log, "ERROR", "DLA is not available on this platform / TensorRT version")
                return None
            if not 0 <= config._dla_core < cores:
                _emit(log, "ERROR", f"DLA core {config._dla_core} is out of range: {cores} DLA cores")
                return None
            fixed = all(lo == hi for p in profiles for lo, _o, hi in p._shapes.values())
            if not fixed:
                if BuilderFlag.GPU_FALLBACK not in config._flags:
                    _emit(log, "ERROR", "DLA does not support dynamic shapes and GPU fallback is off")
                    return None
                for layer in network._nodes:
                    _emit(log, "WARNING", f"Layer '{layer}' (DLA): dynamic shapes are not supported on DLA, "
                                          "falling back to GPU")  # fmt: skip
            else:
                dla_layers = len(network._nodes)
            dla_core = config._dla_core
        host_code = BuilderFlag.VERSION_COMPATIBLE in config._flags and (
            BuilderFlag.EXCLUDE_LEAN_RUNTIME not in config._flags
        )
        dev = _g.state()["devices"][_g.current_device()]
        header = {
            "version": __version__,
            "cc": list(dev.cc),
            "device": dev.name,
            "version_compatible": BuilderFlag.VERSION_COMPATIBLE in config._flags,
            "host_code": host_code,
            "dla_core": dla_core,
            "dla_layers": dla_layers,
            "inputs": [[t.name, t.dtype.name, list(t.shape)] for t in network._inputs],
            "outputs": [[t.name, t.dtype.name, list(t.shape)] for t in network._outputs],
            "profiles": [{k: [list(d) for d in v] for k, v in p._shapes.items()} for p in profiles],
            "layers": network._nodes,
        }
        if config._cache is not None:
            config._cache._entries[str(len(config._cache._entries))] = len(network._nodes)
        _emit(log, "INFO", f"Engine generation completed ({len(network._nodes)} layers)")
        for layer in network._nodes:
            _emit(log, "VERBOSE", f"Tactic selected for {layer}")
        raw = _json.dumps(header).encode()
        return IHostMemory(_MAGIC + _struct.pack("<Q", len(raw)) + raw + network._onnx)


# ------------------------------------------------------------------------------------------- runtime
class Runtime(_Strict):
    __slots__ = ("_logger", "_host_code", "_dla_core")

    def __init__(self, logger) -> None:
        _check_logger(logger, "Runtime")
        if _g.driver_error():
            _emit(logger, "ERROR", f"CUDA initialization failure with error: {_g.driver_error()}")
            raise TypeError("pybind11::init(): factory function returned nullptr")
        self._logger, self._host_code, self._dla_core = logger, False, 0

    num_DLA_cores = property(lambda self: _dla_cores())

    @property
    def engine_host_code_allowed(self):
        return self._host_code

    @engine_host_code_allowed.setter
    def engine_host_code_allowed(self, value):
        self._host_code = _strict_type(value, bool, "engine_host_code_allowed")

    @property
    def DLA_core(self):
        return self._dla_core

    @DLA_core.setter
    def DLA_core(self, value):
        self._dla_core = _strict_type(value, int, "DLA_core")

    def deserialize_cuda_engine(self, serialized_engine):
        data = bytes(memoryview(serialized_engine))
        log = self._logger
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 8:
            _emit(log, "ERROR", "1: [stdArchiveReader.cpp::StdArchiveReaderInitCommon::46] Error Code 1: Serialization "
                                "(Serialization assertion stdVersionRead == kSERIALIZATION_VERSION failed.Version tag "
                                "does not match.)")  # fmt: skip
            return None
        (size,) = _struct.unpack("<Q", data[8:16])
        try:
            header = _json.loads(data[16 : 16 + size])
            onnx_bytes = data[16 + size :]
        except ValueError:
            _emit(log, "ERROR", "Serialization: the plan is corrupt")
            return None
        built = tuple(int(x) for x in header["version"].split(".")[:3])
        if header["version"] != __version__:
            crosses = header["version_compatible"] and (built <= _V) and (built[0] == _V[0] or (built[0], _V[0]) == (10, 11))
            if not crosses:
                _emit(log, "ERROR", f"The engine plan file is not compatible with this version of TensorRT, expecting "
                                    f"library version {__version__} got {header['version']}, please rebuild.")  # fmt: skip
                return None
        if header["host_code"] and not self._host_code:
            _emit(log, "ERROR", "Cannot deserialize engine with lean runtime: engine contains host code and "
                                "IRuntime::setEngineHostCodeAllowed(true) was not called")  # fmt: skip
            return None
        dev = _g.state()["devices"][_g.current_device()]
        if tuple(header["cc"]) != dev.cc:
            _emit(log, "ERROR", f"The engine plan file is generated on an incompatible device, expecting compute "
                                f"{dev.cc[0]}.{dev.cc[1]} got compute {header['cc'][0]}.{header['cc'][1]}, please rebuild.")  # fmt: skip
            return None
        if header["dla_core"] is not None and not 0 <= self._dla_core < _dla_cores():
            _emit(log, "ERROR", f"DLA core {self._dla_core} is not available")
            return None
        return ICudaEngine(header, onnx_bytes, log, self._dla_core if header["dla_core"] is not None else None)


class ICudaEngine(_Strict):
    __slots__ = ("_h", "_onnx", "_logger", "_io", "_session", "_shape_cache", "_device", "_dla_core", "__weakref__")

    def __init__(self, header, onnx_bytes, logger, dla_core) -> None:
        self._h, self._onnx, self._logger = header, onnx_bytes, logger
        self._io = [(n, DataType[d], Dims(s), TensorIOMode.INPUT) for n, d, s in header["inputs"]] + [
            (n, DataType[d], Dims(s), TensorIOMode.OUTPUT) for n, d, s in header["outputs"]
        ]
        self._session = None
        self._shape_cache: dict = {}
        self._device = _g.current_device()
        self._dla_core = dla_core  # the core this engine runs on (Runtime.DLA_core when deserialized)

    num_io_tensors = property(lambda self: len(self._io))
    num_layers = property(lambda self: len(self._h["layers"]))
    num_optimization_profiles = property(lambda self: max(1, len(self._h["profiles"])))

    def _find(self, name, what):
        _strict_type(name, str, what)
        for item in self._io:
            if item[0] == name:
                return item
        _emit(self._logger, "ERROR", f"ICudaEngine::{what}: Error Code 3: API Usage Error (tensor {name} not found)")
        return None

    def get_tensor_name(self, index):
        _strict_type(index, int, "get_tensor_name")
        if not 0 <= index < len(self._io):
            _emit(self._logger, "ERROR", f"getIOTensorName: index {index} out of range")
            return None
        return self._io[index][0]

    def get_tensor_mode(self, name):
        item = self._find(name, "get_tensor_mode")
        return item[3] if item else TensorIOMode.NONE

    def get_tensor_dtype(self, name):
        item = self._find(name, "get_tensor_dtype")
        return item[1] if item else DataType.FLOAT

    def get_tensor_shape(self, name):
        item = self._find(name, "get_tensor_shape")
        return item[2] if item else Dims()

    def get_tensor_profile_shape(self, name, profile_index):
        _strict_type(profile_index, int, "get_tensor_profile_shape")
        item = self._find(name, "get_tensor_profile_shape")
        if item is None or item[3] != TensorIOMode.INPUT:
            return []
        profiles = self._h["profiles"]
        if not profiles:
            return []
        if not 0 <= profile_index < len(profiles):
            _emit(self._logger, "ERROR", f"profile index {profile_index} out of range")
            return []
        return [Dims(d) for d in profiles[profile_index].get(name, [])]

    def create_execution_context(self, strategy=ExecutionContextAllocationStrategy.STATIC):
        _enum_arg(strategy, ExecutionContextAllocationStrategy, "create_execution_context")
        return IExecutionContext(self)

    def serialize(self):
        raw = _json.dumps(self._h).encode()
        return IHostMemory(_MAGIC + _struct.pack("<Q", len(raw)) + raw + self._onnx)

    # -- emulation ---------------------------------------------------------------------------------------
    def _run(self, feeds):
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(_os.environ.get("FCN_DEPLOY_TRT_DOUBLE_THREADS", "1"))
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(self._onnx, opts, providers=["CPUExecutionProvider"])
        return self._session.run(None, feeds)

    def _output_shapes(self, input_shapes: dict) -> dict:
        """Output shapes for these input shapes (shape inference: one emulated run on zeros, cached)."""
        import numpy as np

        key = tuple(sorted(input_shapes.items()))
        if key not in self._shape_cache:
            feeds = {n: np.zeros(input_shapes[n], _NP[d.name]) for n, d, _s, m in self._io if m == TensorIOMode.INPUT}
            outs = self._run(feeds)
            names = [n for n, _d, _s, m in self._io if m == TensorIOMode.OUTPUT]
            self._shape_cache[key] = {n: tuple(o.shape) for n, o in zip(names, outs, strict=False)}
        return self._shape_cache[key]


class IExecutionContext(_Strict):
    __slots__ = ("_engine", "_shapes", "_addresses", "_profiler", "_ran_shapes", "__weakref__")

    def __init__(self, engine) -> None:
        self._engine = engine
        self._shapes: dict[str, Dims] = {}
        self._addresses: dict[str, int] = {}
        self._profiler = None
        self._ran_shapes = None

    engine = property(lambda self: self._engine)

    @property
    def profiler(self):
        return self._profiler

    @profiler.setter
    def profiler(self, value):
        if value is not None and not isinstance(value, IProfiler):
            raise TypeError("profiler: incompatible function arguments: expected tensorrt.IProfiler")
        if value is not None and not getattr(value, "_trt_initialised", False):
            raise TypeError("IProfiler.__init__() must be called when overriding __init__")
        self._profiler = value

    def _error(self, msg):
        _emit(self._engine._logger, "ERROR", msg)

    def set_input_shape(self, name, shape):
        _strict_type(name, str, "set_input_shape")
        dims = _dims_arg(shape, "set_input_shape")
        item = self._engine._find(name, "set_input_shape")
        if item is None or item[3] != TensorIOMode.INPUT:
            self._error(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error ({name} is not an input)")
            return False
        static = item[2]
        if len(dims) != len(static) or any(s >= 0 and s != d for s, d in zip(static, dims, strict=False)):
            self._error(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (shape {tuple(dims)} "
                        f"does not match {tuple(static)} of {name})")  # fmt: skip
            return False
        profiles = self._engine._h["profiles"]
        if profiles and name in profiles[0]:
            lo, _opt, hi = profiles[0][name]
            if not all(a <= d <= b for a, d, b in zip(lo, dims, hi, strict=False)):
                self._error(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Supplied binding "
                            f"dimension {tuple(dims)} for {name} is out of the optimization profile's range "
                            f"[{tuple(lo)}, {tuple(hi)}])")  # fmt: skip
                return False
        self._shapes[name] = dims
        return True

    def _inputs(self):
        return [(n, d, s) for n, d, s, m in self._engine._io if m == TensorIOMode.INPUT]

    def _input_shapes(self):
        shapes = {}
        for n, _d, s in self._inputs():
            if n in self._shapes:
                shapes[n] = tuple(self._shapes[n])
            elif all(x >= 0 for x in s):
                shapes[n] = tuple(s)
            else:
                return None
        return shapes

    def get_tensor_shape(self, name):
        item = self._engine._find(name, "get_tensor_shape")
        if item is None:
            return Dims()
        if item[3] == TensorIOMode.INPUT:
            return self._shapes.get(name, item[2])
        shapes = self._input_shapes()
        if shapes is None:
            self._error(f"IExecutionContext::getTensorShape: Error Code 3: API Usage Error (output {name}: input "
                        "shapes have not been specified; call set_input_shape first)")  # fmt: skip
            return Dims(-1 if d < 0 else d for d in item[2])
        return Dims(self._engine._output_shapes(shapes)[name])

    def set_tensor_address(self, name, memory):
        _strict_type(name, str, "set_tensor_address")
        _strict_type(memory, int, "set_tensor_address")
        if self._engine._find(name, "set_tensor_address") is None:
            return False
        self._addresses[name] = memory
        return True

    def get_tensor_address(self, name):
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle):
        _strict_type(stream_handle, int, "execute_async_v3")
        import numpy as np

        eng = self._engine
        if _g.current_device() != eng._device:
            self._error(f"IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (the engine was deserialized on "
                        f"device {eng._device}, the calling thread's current device is {_g.current_device()}: "
                        "call cudaSetDevice on this thread)")  # fmt: skip
            return False
        if stream_handle and stream_handle not in _g.state()["streams"]:
            self._error("IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (invalid resource handle)")
            return False
        shapes = self._input_shapes()
        if shapes is None:
            self._error("IExecutionContext::enqueueV3: Error Code 3: API Usage Error (not all input shapes are "
                        "specified)")  # fmt: skip
            return False
        out_shapes = eng._output_shapes(shapes)
        plan = []
        for n, d, _s, m in eng._io:
            shape = shapes[n] if m == TensorIOMode.INPUT else out_shapes[n]
            nbytes = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE[d.name]
            ptr = self._addresses.get(n)
            if not ptr:
                self._error(f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (Address is not set for "
                            f"{'input' if m == TensorIOMode.INPUT else 'output'} tensor {n}. Call "
                            "setInputTensorAddress or setTensorAddress before enqueue/execute.)")  # fmt: skip
                return False
            if _g.find(ptr, nbytes) is None:
                self._error(f"IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (an illegal memory access: "
                            f"tensor {n} needs {nbytes} bytes of device memory at {ptr:#x})")  # fmt: skip
                return False
            plan.append((n, d, shape, m, ptr, nbytes))
        if _g.capturing(stream_handle) and self._ran_shapes != shapes:
            self._error("IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (operation not permitted when "
                        "stream is capturing: enqueue once outside the capture after a shape change)")  # fmt: skip
            return False
        profiler = self._profiler
        layers = eng._h["layers"]

        def work():
            feeds = {n: np.frombuffer(_g.read(ptr, nb), _NP[d.name]).reshape(shape)
                     for n, d, shape, m, ptr, nb in plan if m == TensorIOMode.INPUT}  # fmt: skip
            t0 = _time.perf_counter()
            outs = iter(eng._run(feeds))
            ms = (_time.perf_counter() - t0) * 1000.0
            for n, d, shape, m, ptr, nb in plan:
                if m == TensorIOMode.OUTPUT:
                    arr = np.ascontiguousarray(next(outs), _NP[d.name])
                    if tuple(arr.shape) != tuple(shape) or arr.nbytes != nb:
                        raise MemoryError(f"output {n}: emulated run gave {arr.shape}, expected {shape}")
                    _g.write(ptr, arr.tobytes())
            if profiler is not None:
                for layer in layers:
                    profiler.report_layer_time(layer, ms / max(len(layers), 1))

        _g.enqueue(stream_handle, work)
        self._ran_shapes = shapes
        return True
