"""Triton model configurations: built as Triton's own protobuf (tritonclient's model_config_pb2), written as
config.pbtxt, and validated by parsing the text back against that protobuf plus the rules the server enforces.
"""

from __future__ import annotations

from typing import Any

from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError

# ONNX TensorProto element types -> Triton data types (the ones an fcn-deploy graph can carry).
ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 10: "TYPE_FP16"}
# TensorRT / numpy dtype names -> Triton data types (engine manifests' io_tensors).
NAME_TO_TRITON = {
    "float32": "TYPE_FP32", "FLOAT": "TYPE_FP32", "float16": "TYPE_FP16", "HALF": "TYPE_FP16",
    "int32": "TYPE_INT32", "INT32": "TYPE_INT32", "int64": "TYPE_INT64", "INT64": "TYPE_INT64",
    "uint8": "TYPE_UINT8", "UINT8": "TYPE_UINT8", "int8": "TYPE_INT8", "INT8": "TYPE_INT8",
}  # fmt: skip
TRITON_TO_NUMPY = {
    "TYPE_FP32": "float32", "TYPE_FP16": "float16", "TYPE_INT32": "int32", "TYPE_INT64": "int64",
    "TYPE_UINT8": "uint8", "TYPE_INT8": "int8",
}  # fmt: skip
PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan")
BACKENDS = ("python", "onnxruntime", "tensorrt")


def pb2() -> Any:
    """Triton's model-configuration protobuf module, shipped in tritonclient's gRPC package."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise MissingDependencyError(
            f"tritonclient is not installed ({e}); pip install 'fcn-deploy[serve]' to write and check Triton configs"
        ) from None
    return model_config_pb2


def to_pbtxt(config: dict[str, Any], source: str) -> str:
    """A config dict (protobuf JSON field names) -> config.pbtxt text, refused if the protobuf does not take it."""
    from google.protobuf import json_format, text_format

    try:
        message = json_format.ParseDict(config, pb2().ModelConfig())
    except json_format.ParseError as e:
        raise FcnDeployError(f"{source}: not a valid Triton model configuration ({e})") from None
    text = text_format.MessageToString(message)
    validate_pbtxt(text, source)
    return text


def parse_pbtxt(text: str, source: str) -> Any:
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, pb2().ModelConfig())
    except text_format.ParseError as e:
        raise FcnDeployError(f"{source}: not a valid Triton model configuration ({e})") from None


def validate_pbtxt(text: str, source: str) -> Any:
    """Parse against Triton's ModelConfig protobuf, then check what tritonserver refuses at load time."""
    c = parse_pbtxt(text, source)
    pb = pb2()
    bad = []
    if not c.name:
        bad.append("no name")
    if not c.platform and not c.backend:
        bad.append("neither platform nor backend is set")
    if c.platform and c.platform not in (*PLATFORMS, "ensemble"):
        bad.append(f"platform {c.platform!r} is not one of {', '.join((*PLATFORMS, 'ensemble'))}")
    if c.backend and c.backend not in BACKENDS:
        bad.append(f"backend {c.backend!r} is not one of {', '.join(BACKENDS)}")
    if c.max_batch_size < 0:
        bad.append("max_batch_size < 0")
    for kind, tensors in (("input", c.input), ("output", c.output)):
        if not tensors and c.platform != "ensemble":
            bad.append(f"no {kind}s")
        for t in tensors:
            if t.data_type == pb.TYPE_INVALID:
                bad.append(f"{kind} {t.name!r} has no data_type")
            if not t.dims:
                bad.append(f"{kind} {t.name!r} has no dims")
            if any(d == 0 or d < -1 for d in t.dims):
                bad.append(f"{kind} {t.name!r} dims {list(t.dims)}: each must be -1 or positive")
    if c.HasField("dynamic_batching"):
        if c.max_batch_size == 0:
            bad.append("dynamic_batching needs max_batch_size > 0")
        over = [p for p in c.dynamic_batching.preferred_batch_size if p > c.max_batch_size or p < 1]
        if over:
            bad.append(f"preferred_batch_size {over} outside 1..max_batch_size {c.max_batch_size}")
    inputs = {t.name: t for t in c.input}
    for w in c.model_warmup:
        if c.max_batch_size and not 1 <= w.batch_size <= c.max_batch_size:
            bad.append(f"warmup {w.name!r}: batch_size {w.batch_size} outside 1..{c.max_batch_size}")
        for key, value in w.inputs.items():
            if key not in inputs:
                bad.append(f"warmup {w.name!r}: no input named {key!r}")
            elif any(d < 1 for d in value.dims) or len(value.dims) != len(inputs[key].dims):
                bad.append(f"warmup {w.name!r}: dims {list(value.dims)} must be concrete and match {key!r}")
    for g in c.instance_group:
        if g.kind == pb.ModelInstanceGroup.KIND_CPU and g.gpus:
            bad.append("a KIND_CPU instance group lists gpus")
    if c.platform == "ensemble":
        if not c.ensemble_scheduling.step:
            bad.append("an ensemble without steps")
        produced = set(inputs)
        for step in c.ensemble_scheduling.step:
            missing = [v for v in step.input_map.values() if v not in produced]
            if missing:
                bad.append(f"ensemble step {step.model_name!r} reads {missing} before anything produces them")
            produced.update(step.output_map.values())
        unproduced = [t.name for t in c.output if t.name not in produced]
        if unproduced:
            bad.append(f"ensemble outputs {unproduced} are produced by no step")
    if bad:
        raise FcnDeployError(f"{source}: invalid Triton model configuration: {'; '.join(bad)}")
    return c
