"""ONNX Runtime backend: an exported `.onnx` with its model card, on CPU, CUDA or TensorRT execution providers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.core.backend import GraphBackend
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.environment import usable_cores
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.onnx_io import load_onnx
from fcn_deploy.core.outputs import normalize_outputs

TRT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fcn-deploy" / "ort-tensorrt"


def tensorrt_provider_options(model_bytes: bytes, precision: str = "fp32") -> dict[str, Any]:
    """ONNX Runtime TensorRT EP options for this model (onnxruntime's documented `trt_*` provider options).

    ORT names cached engines by model path + tensor names (TRTGenerateId), not by weights, and a model handed
    over as bytes has no path: a retrained model of the same architecture would reuse the old engine. So each
    model gets its own cache folder, named by the sha256 of the exact bytes ORT is given. FP16 and Q/DQ graphs
    need trt_fp16_enable / trt_int8_enable, or the provider builds them as FP32 (onnxruntime#13381, #17312).
    """
    digest = hashlib.sha256(model_bytes).hexdigest()
    folder = TRT_CACHE / digest[:32]
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(folder),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(folder),
        "trt_fp16_enable": precision in ("fp16", "int8"),
        "trt_int8_enable": precision == "int8",
    }


def graph_precision(proto: Any) -> str:
    """'int8' (Q/DQ nodes), 'fp16' (FP16 weights) or 'fp32'."""
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        return "int8"
    if any(t.data_type == 10 for t in proto.graph.initializer):  # onnx.TensorProto.FLOAT16
        return "fp16"
    return "fp32"


def choose_providers(
    device: str, available: list[str], model_bytes: bytes | None = None, precision: str = "fp32"
) -> list[Any]:
    """Best available providers for the device (auto: cuda when this onnxruntime has the CUDA provider), CPU
    always last as the fallback for unsupported nodes. The TensorRT provider (when present) needs the model's
    bytes to key its engine cache."""
    if device == "auto":
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device != "cuda":
        raise FcnDeployError(f"--device {device!r}: choose auto, cpu or cuda")
    if "CUDAExecutionProvider" not in available:
        raise MissingDependencyError(
            f"--device cuda: this onnxruntime has no CUDA provider (available: {', '.join(available)}); "
            "install onnxruntime-gpu instead of onnxruntime, or use --device cpu"
        )
    providers: list[Any] = []
    if "TensorrtExecutionProvider" in available and model_bytes is not None:
        providers.append(("TensorrtExecutionProvider", tensorrt_provider_options(model_bytes, precision)))
    return [*providers, "CUDAExecutionProvider", "CPUExecutionProvider"]


# Idle intra-op workers spin a bounded 100 us between the parallel sections of one run, and stop the moment run()
# returns so that the pipeline's capture/draw/write threads get the cores between frames. Workers that sleep at
# once pay a wake-up at every section (+5% on the paper FCN-8s, issue 18); ORT's default, unbounded spin burns the
# cores other jobs need (10-25% slower than this bound on the loaded 2-core machine, benchmarks/backend_overhead.py).
SESSION_CONFIG = {
    "session.intra_op.allow_spinning": "1",
    "session.intra_op.spin_duration_us": "100",
    "session.force_spinning_stop": "1",
}


# ONNX Runtime's QDQ propagation moves a QuantizeLinear back across a float MaxPool, which turns the pool at every
# FP32 -> INT8 border of an `--auto` plan into a uint8 MaxPool in NCHW: a slow kernel (3.6-5 ms where the NHWC
# uint8 and the NCHWc float pools take 0.1-1 ms; CamVid model, 360x480). The quantizer already put every Q/DQ where
# it belongs, so nothing else is lost: CamVid (2-core AMX Xeon, one interleaved run) auto plan 40.3 -> 34.7 ms,
# plain INT8 32.8 / 32.5 ms, FP32 65.4 / 65.4 ms, labels identical (Q commutes with max).
DISABLED_OPTIMIZERS = ("QDQPropagationTransformer",)


def inference_session(data: bytes, options: Any, providers: list[Any]) -> Any:
    """An onnxruntime.InferenceSession the way every fcn-deploy ONNX Runtime backend opens one."""
    import onnxruntime as ort

    return ort.InferenceSession(data, options, providers=providers, disabled_optimizers=list(DISABLED_OPTIMIZERS))


def cpu_session_options(threads: int | None = None) -> Any:
    """The one set of ONNX Runtime session options fcn-deploy runs with (inference, profile, quantize summary)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # an FCN is one chain: parallelism is intra-op
    opts.inter_op_num_threads = 1
    for key, value in SESSION_CONFIG.items():
        opts.add_session_config_entry(key, value)
    if threads:
        opts.intra_op_num_threads = threads
    return opts


class OrtBackend(GraphBackend):
    """An ONNX model with its card. `model` is a path or serialized bytes (an in-memory lowered model);
    `card` describes a model that carries none (e.g. one quantized with --mean/--std), else the embedded card."""

    name = "onnxruntime"

    def __init__(
        self,
        model: str | Path | bytes,
        device: str = "cpu",
        providers: list[Any] | None = None,
        threads: int | None = None,
        card: ModelCard | None = None,
    ) -> None:
        import onnx
        import onnxruntime as ort

        in_memory = isinstance(model, bytes)
        self._model = model
        self.path = None if in_memory else Path(model)
        where = "in-memory ONNX model" if in_memory else str(self.path)
        proto = onnx.load_from_string(model) if in_memory else load_onnx(self.path)
        self.card = card if card is not None else ModelCard.from_onnx(proto, where)
        available = ort.get_available_providers()
        data = proto.SerializeToString()
        self.providers = (
            providers if providers is not None else choose_providers(device, available, data, graph_precision(proto))
        )
        for p in self.providers:
            if isinstance(p, tuple) and p[0] == "TensorrtExecutionProvider" and "trt_engine_cache_path" in p[1]:
                Path(p[1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        try:
            self.session = inference_session(data, cpu_session_options(threads), self.providers)
        except (
            Exception
        ) as e:  # ORT's typed errors (InvalidGraph, Fail, ...) all mean this file cannot run here
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise FcnDeployError(
                f"{where}: ONNX Runtime cannot load it ({first}); re-export the model"
            ) from None
        del proto

        inputs = {i.name: i for i in self.session.get_inputs()}
        shape = inputs[self.card.input_name].shape if self.card.input_name in inputs else [None] * 4
        # A static H and W (ints in the graph) must be fed exactly; dynamic ones are strings or None.
        static = isinstance(shape[2], int) and isinstance(shape[3], int)
        self.bind_graph(where, list(inputs), (shape[2], shape[3]) if static else None,
                        [o.name for o in self.session.get_outputs()])
        self._output_names = [n for n, _ in self._outputs]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        # No copy for a C-contiguous float32 batch (what preprocess gives); ORT wraps it and returns its outputs
        # without copying them either.
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        values = self.session.run(self._output_names, {self.card.input_name: batch})
        return normalize_outputs({kind: v for (_, kind), v in zip(self._outputs, values, strict=True)})

    def concurrent(self, streams: int) -> OrtBackend | None:
        """CPU only: one more session with cores // streams intra-op threads; ONNX Runtime's run() is thread-safe,
        and each stream's run then computes on its calling thread (with one thread per stream) without the
        barrier between the parallel sections of every operator, where a pool worker that a capture or encode
        thread pre-empted stalls the other cores."""
        if any((p[0] if isinstance(p, tuple) else p) != "CPUExecutionProvider" for p in self.providers):
            return None
        return OrtBackend(self._model, providers=self.providers, threads=max(1, usable_cores() // streams),
                          card=self.card)  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": str(self.path) if self.path else "in memory",
            "providers": self.session.get_providers(),
            "outputs": [kind for _, kind in self._outputs],
            "fixed_hw": self._sizes.fixed,
        }

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
