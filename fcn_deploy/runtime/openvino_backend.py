"""OpenVINO backend: an exported `.onnx` (FP32, FP16 or Q/DQ INT8) with its model card, on the CPU.

Torch-free. The inference precision is chosen, never left to OpenVINO's default (which is BF16 on a CPU with
AMX): `fp32` sets INFERENCE_PRECISION_HINT f32, so FP32 and FP16 graphs compute in FP32 and agree with ONNX
Runtime; `bf16` runs on the matrix units (AVX512-BF16 / AMX) and is refused, naming the reason, on a CPU without
them. A Q/DQ graph runs its INT8 part as int8 kernels under either hint (OpenVINO fuses Q/DQ into FakeQuantize);
the hint decides its float layers, BF16 by default on AMX (`default_precision`).

The model is compiled once per input shape (static shapes run faster than a dynamic compile on the CPU plugin)
and kept for the life of the backend; OpenVINO's model cache (CACHE_DIR) lives in a directory keyed by the ONNX
sha256 and the compile options, so a second process loads the compiled blob instead of compiling again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.core.atomic import sha256_file
from fcn_deploy.core.backend import GraphBackend
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.environment import cpu_flags
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.onnx_io import load_onnx
from fcn_deploy.core.outputs import normalize_outputs

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fcn-deploy" / "openvino"
_HINTS = {"fp32": "f32", "bf16": "bf16"}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_refusal(cpuinfo: list[str] | None = None) -> str | None:
    """None where this CPU computes BF16 natively (AVX512-BF16 or AMX-BF16), else the reason it cannot.

    `cpuinfo`: the lines of /proc/cpuinfo (None: read this machine's)."""
    flags = cpu_flags(cpuinfo)
    if flags is None:
        return "this CPU lists no instruction-set flags (/proc/cpuinfo), so BF16 support cannot be confirmed"
    if any(flags.get(f) for f in BF16_FLAGS):
        return None
    return f"this CPU has neither {' nor '.join(BF16_FLAGS)} (BF16 would be emulated, slower than FP32)"


def check_precision(precision: str, cpuinfo: list[str] | None = None) -> None:
    """One-line refusal of a precision this backend or CPU cannot run."""
    if precision not in PRECISIONS:
        raise FcnDeployError(f"--precision {precision!r}: the OpenVINO backend takes {', '.join(PRECISIONS)}")
    if precision == "bf16":
        reason = bf16_refusal(cpuinfo)
        if reason:
            raise FcnDeployError(f"--precision bf16: {reason}; use --precision fp32 (or an INT8 Q/DQ model)")
        if not (cpu_flags(cpuinfo) or {}).get("amx_bf16"):
            _warn_bf16_without_amx()


@functools.cache  # once per process: report and profile open many backends
def _warn_bf16_without_amx() -> None:
    log.warning("warning: --precision bf16 on AVX512-BF16 without AMX runs slower than FP32 (measured 1.23x ONNX "
                "Runtime FP32 on the CamVid model, benchmarks/cpu_runtimes.py); an INT8 model is faster on this CPU")


def default_precision(graph_precision: str, cpuinfo: list[str] | None = None) -> str:
    """The compute precision when none is asked: `fp32` (exact) for FP32 and FP16 graphs; for an INT8 Q/DQ graph on
    a CPU with AMX-BF16, `bf16` for the layers it keeps in float (the first conv, the decoder, the groups an
    `--auto` plan kept): the int8 layers are unchanged, the float ones run on the matrix units. Measured on the
    CamVid model of docs/camvid_recipe.md at 360x480 (AMX Xeon, benchmarks/cpu_runtimes.py, README): the ONNX
    Runtime-flavour graph 8.3 ms instead of 9.2 (after an idle pause; 6.8 instead of 7.2 back to back; the paper
    FCN-8s 85 instead of 93), CamVid val mean IoU within 0.02 points and agreement with FP32 within 0.03%. Without
    AMX, BF16 is slower than FP32, so FP32 stays."""
    if graph_precision == "int8" and (cpu_flags(cpuinfo) or {}).get("amx_bf16"):
        return "bf16"
    return "fp32"


def compile_options(precision: str, threads: int | None) -> dict[str, str]:
    """The OpenVINO CPU properties fcn-deploy compiles with (the cache key includes them)."""
    opts = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        opts["INFERENCE_NUM_THREADS"] = str(threads)
    return opts


def cache_dir_for(model_sha256: str, options: dict[str, str], root: Path | None = None) -> Path:
    """~/.cache/fcn-deploy/openvino/<ONNX sha256[:16]>-<options hash[:12]>: a changed model or option never
    reuses another's compiled blob."""
    opt_key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    return (root or CACHE_ROOT) / f"{model_sha256[:16]}-{opt_key}"


class OpenVinoBackend(GraphBackend):
    """An ONNX model with its card on OpenVINO's CPU plugin. `model` is a path or serialized ONNX bytes;
    `card` describes a model that carries none, else the embedded card."""

    name = "openvino"

    def __init__(
        self,
        model: str | Path | bytes,
        precision: str | None = None,
        threads: int | None = None,
        card: ModelCard | None = None,
        cache_root: Path | None = None,
    ) -> None:
        import onnx

        try:
            import openvino as ov
        except ImportError:
            raise MissingDependencyError(
                "openvino is not installed; pip install 'fcn-deploy[cpu]' (or use --backend onnxruntime)"
            ) from None
        if precision is not None:
            check_precision(precision)
        in_memory = isinstance(model, bytes)
        self.path = None if in_memory else Path(model)
        self._where = where = "in-memory ONNX model" if in_memory else str(self.path)
        proto = onnx.load_from_string(model) if in_memory else load_onnx(self.path)
        self.card = card if card is not None else ModelCard.from_onnx(proto, where)
        self.sha256 = hashlib.sha256(model).hexdigest() if in_memory else sha256_file(self.path)
        self.precision = precision or default_precision(self.card.precision)
        if precision is None and self.precision == "bf16":
            log.info("openvino: %s is an INT8 graph; its float layers run in BF16 on this AMX CPU "
                     "(--precision fp32 keeps them FP32)", where)
        self.options = compile_options(self.precision, threads)
        self.cache_dir = cache_dir_for(self.sha256, self.options, cache_root)
        self._ov = ov
        self._core = ov.Core()
        try:
            # A file is read by path (OpenVINO resolves external data beside it); bytes through the ONNX frontend.
            self._model = (
                self._core.read_model(model, b"") if in_memory else self._core.read_model(str(self.path))
            )
        except Exception as e:  # OpenVINO's frontend errors are plain RuntimeErrors
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise FcnDeployError(f"{where}: OpenVINO cannot read it ({first}); re-export the model") from None
        del proto

        inputs = {name for port in self._model.inputs for name in port.get_names()}
        static_hw = None
        if self.card.input_name in inputs:
            shape = self._model.input(self.card.input_name).get_partial_shape()
            if shape.rank.is_static and shape[2].is_static and shape[3].is_static:
                static_hw = (shape[2].get_length(), shape[3].get_length())
        self.bind_graph(where, sorted(inputs), static_hw,
                        sorted({name for port in self._model.outputs for name in port.get_names()}))
        self._compiled: dict[tuple[int, ...], tuple[Any, Any]] = {}

    @property
    def compiled_shapes(self) -> list[tuple[int, ...]]:
        return sorted(self._compiled)

    def _request(self, shape: tuple[int, ...]) -> Any:
        hit = self._compiled.get(shape)
        if hit is not None:
            return hit[1]
        model = self._model.clone()
        try:
            model.reshape({self.card.input_name: self._ov.PartialShape(list(shape))})
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise FcnDeployError(
                f"{self._where}: OpenVINO cannot run it at input shape {'x'.join(map(str, shape))} ({first}); "
                "choose a size in the model card's range"
            ) from None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        compiled = self._core.compile_model(model, "CPU", {**self.options, "CACHE_DIR": str(self.cache_dir)})
        request = compiled.create_infer_request()
        self._compiled[shape] = (compiled, request)
        return request

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        request = self._request(tuple(batch.shape))
        # The request reads the batch in place and returns views of its output tensors; each kept output is
        # copied once (the next run reuses those tensors while the pipeline still draws this frame).
        result = request.infer({self.card.input_name: batch}, share_inputs=True, share_outputs=True)
        return normalize_outputs({kind: result[name].copy() for name, kind in self._outputs})

    def execution_precision(self) -> str | None:
        """What the compiled model actually runs at (None before the first run)."""
        if not self._compiled:
            return None
        compiled = next(iter(self._compiled.values()))[0]
        return compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": str(self.path) if self.path else "in memory",
            "device": "CPU",
            "precision": self.precision,  # the hint: what an INT8 graph's float layers compute in
            "graph_precision": self.card.precision,
            "options": dict(self.options),
            "openvino": self._ov.__version__,
            "cache_dir": str(self.cache_dir),
            "compiled_shapes": [list(s) for s in self.compiled_shapes],
            "outputs": [kind for _, kind in self._outputs],
            "fixed_hw": self._sizes.fixed,
        }

    def close(self) -> None:
        self._compiled.clear()
