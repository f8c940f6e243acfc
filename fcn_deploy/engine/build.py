"""ONNX -> strongly typed TensorRT plan + manifest, with one code path for TensorRT 10.3 ... 11.x.

Precision is decided by the ONNX graph (FP16 tensors, Q/DQ nodes), never by builder flags: TensorRT 11 removed
BuilderFlag.FP16/INT8 and the calibrators, and 10.x accepts the strongly typed path too. Loader-style names
(Polygraphy's convention): `network_from_onnx`, `config_from_options`, `engine_from_onnx`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcn_deploy.core.atomic import sha256_file, write_bytes
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.engine import trt_compat
from fcn_deploy.engine.manifest import EngineManifest, write_manifest
from fcn_deploy.engine.profile_shapes import Profile

log = logging.getLogger(__name__)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
ONNX_FLOAT16 = 10  # onnx.TensorProto.FLOAT16
MAX_PARSER_ERRORS_SHOWN = 10


@dataclass(frozen=True)
class BuildOptions:
    profile: Profile
    workspace_bytes: int | None = None
    timing_cache: Path | None = None
    dla_core: int | None = None
    builder_optimization_level: int | None = None
    version_compatible: bool = False  # embeds the lean runtime (host code): only when asked

    def to_dict(self) -> dict[str, Any]:
        return {
            "strongly_typed": True,
            "workspace_bytes": self.workspace_bytes,
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
            "dla_core": self.dla_core,
            "gpu_fallback": self.dla_core is not None,
            "builder_optimization_level": self.builder_optimization_level,
            "version_compatible": self.version_compatible,
        }


@dataclass(frozen=True)
class BuildResult:
    engine_path: Path
    manifest_path: Path
    manifest: EngineManifest
    warnings: tuple[str, ...]


def detect_precision(model: Any) -> str:
    """'int8' when the graph has Q/DQ nodes, 'fp16' when it carries FP16 weights, else 'fp32'."""
    graph = model.graph
    if any(n.op_type in QDQ_OPS for n in graph.node):
        return "int8"
    if any(t.data_type == ONNX_FLOAT16 for t in graph.initializer):
        return "fp16"
    return "fp32"


def check_level(level: int | None) -> None:
    if level is not None and not 0 <= level <= 5:
        raise FcnDeployError(f"--builder-optimization-level {level}: must be 0..5 (TensorRT's default is 3)")


def check_dla_profile(options: BuildOptions) -> None:
    """DLA layers take fixed shapes only: with min != max TensorRT silently sends every layer to the GPU. Refuse."""
    if options.dla_core is None:
        return
    lo, opt, hi = options.profile.shapes()
    if lo == opt == hi:
        return
    p = options.profile
    hw = f"{p.opt_hw[0]}x{p.opt_hw[1]}"
    raise FcnDeployError(
        f"--dla-core {options.dla_core}: the DLA runs fixed shapes only, and this profile is dynamic "
        f"({p.describe()}): TensorRT would run every layer on the GPU instead. Refusing; build a fixed-shape "
        f"DLA engine with --min-shape {hw} --opt-shape {hw} --max-shape {hw} --batch {opt[0]}"
    )


def format_parser_error(err: Any) -> str:
    """'node 12 conv1_1 (Conv): <desc>': the ONNX node name is what a user can find in Netron."""
    node = err.node()
    where = f"node {node}" if node >= 0 else "graph"
    name, op = err.node_name(), err.node_operator()
    if name:
        where += f" {name}"
    if op:
        where += f" ({op})"
    return f"{where}: {' '.join(str(err.desc()).split())}"


def network_from_onnx(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    """Strongly typed network parsed from a file (parse_from_file resolves external weights beside it)."""
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        shown = "; ".join(errors[:MAX_PARSER_ERRORS_SHOWN]) or logger.store.reason()
        more = (
            f" (+{len(errors) - MAX_PARSER_ERRORS_SHOWN} more)"
            if len(errors) > MAX_PARSER_ERRORS_SHOWN
            else ""
        )
        raise FcnDeployError(
            f"{onnx_path}: TensorRT {trt.__version__} cannot parse this ONNX: {shown}{more}; "
            "simplify or re-export the model (a newer opset/TensorRT may support the node)"
        )
    return network, parser


def _find_input(network: Any, name: str, source: Path) -> Any:
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for tensor in inputs:
        if tensor.name == name:
            return tensor
    raise FcnDeployError(
        f"{source}: TensorRT sees inputs {[t.name for t in inputs]}, not {name!r}; re-export it"
    )


def _load_timing_cache(trt: Any, config: Any, path: Path | None, warnings: list[str]) -> None:
    data = path.read_bytes() if path and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        warnings.append(f"timing cache {path} was made by another TensorRT/GPU; starting an empty one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def config_from_options(
    trt: Any,
    builder: Any,
    options: BuildOptions,
    version: trt_compat.TrtVersion,
    cc: tuple[int, int] | None,
    warnings: list[str],
) -> Any:
    config = builder.create_builder_config()
    if options.workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = options.builder_optimization_level
    profile = builder.create_optimization_profile()
    lo, opt, hi = options.profile.shapes()
    profile.set_shape(options.profile.input_name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if options.timing_cache is not None:
        _load_timing_cache(trt, config, options.timing_cache, warnings)
    if options.dla_core is not None:
        trt_compat.check_dla(version, cc, options.dla_core, builder.num_DLA_cores)
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        check_dla_profile(options)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    return config


def _io_tensors(network: Any) -> list[dict[str, Any]]:
    out = []
    for mode, count, get in (
        ("input", network.num_inputs, network.get_input),
        ("output", network.num_outputs, network.get_output),
    ):
        for i in range(count):
            t = get(i)
            out.append(
                {"name": t.name, "mode": mode, "dtype": t.dtype.name, "shape": [int(d) for d in t.shape]}
            )
    return out


def engine_from_onnx(
    onnx_path: str | Path,
    output: str | Path,
    options: BuildOptions,
    *,
    card: ModelCard,
    precision: str,
    provenance: dict[str, Any],
    source_onnx: str | Path,
    rebuild_command: str,
) -> BuildResult:
    """Build `onnx_path`, then write the plan (atomic) and its manifest (atomic, last).

    `source_onnx` is the model the user gave (the same file unless --fp16/--int8 lowered it first): the manifest
    names it, so a later `infer` can refuse an engine whose ONNX changed. Needs TensorRT and cuda-python.
    """
    from fcn_deploy.engine import cuda_rt
    from fcn_deploy.engine.logger import capturing_logger

    onnx_path, output = Path(onnx_path), Path(output)
    check_level(options.builder_optimization_level)
    trt = trt_compat.import_tensorrt()
    cuda_rt.cudart()  # MissingDependencyError (exit 3) before any work if cuda-python is absent
    version = trt_compat.TrtVersion.parse(trt.__version__)
    gpu_name, cc = cuda_rt.device_info(0)
    if options.dla_core is not None:  # refuse before parsing when this TensorRT/device has no DLA at all
        ok, reason = trt_compat.dla_supported(version, cc)
        if not ok:
            raise FcnDeployError(
                f"--dla-core {options.dla_core}: {reason}; drop --dla-core to build for the GPU"
            )
        check_dla_profile(options)
    logger = capturing_logger()
    try:
        builder = trt.Builder(logger)
    except TypeError:  # pybind11: "factory function returned nullptr" (CUDA init failed)
        raise FcnDeployError(f"TensorRT could not create a builder: {logger.store.reason()}") from None
    network, _parser = network_from_onnx(trt, builder, logger, onnx_path)  # parser owns weights: keep alive
    _find_input(network, options.profile.input_name, onnx_path)
    warnings: list[str] = []
    config = config_from_options(trt, builder, options, version, cc, warnings)
    log.info(
        "building %s engine for %s (%s), TensorRT %s: %s",
        precision,
        gpu_name,
        f"sm_{cc[0]}{cc[1]}",
        trt.__version__,
        options.profile.describe(),
    )
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise FcnDeployError(
            f"{onnx_path}: TensorRT {trt.__version__} failed to build the engine: {logger.store.reason()}"
        )
    if options.timing_cache is not None:
        write_bytes(options.timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    write_bytes(output, bytes(memoryview(plan)))
    manifest = EngineManifest(
        engine_sha256=sha256_file(output),
        engine_bytes=output.stat().st_size,
        onnx_sha256=sha256_file(source_onnx),
        onnx_file=Path(source_onnx).name,
        tensorrt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=cc,
        precision=precision,
        profile=options.profile.to_dict(),
        dla_core=options.dla_core,
        build_options=options.to_dict(),
        provenance=provenance,
        model_card=card.to_dict(),
        io_tensors=_io_tensors(network),
        rebuild_command=rebuild_command,
    )
    path = write_manifest(output, manifest)
    return BuildResult(output, path, manifest, tuple(warnings))
