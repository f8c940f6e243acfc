"""ONNX Runtime backend: an exported `.onnx` with its model card, on CPU, CUDA or TensorRT execution providers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.onnx_io import load_onnx
from fcn_deploy.core.outputs import normalize_outputs
from fcn_deploy.core.shapes import ShapeRange

TRT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fcn-deploy" / "ort-tensorrt"


def choose_providers(device: str, available: list[str]) -> list[Any]:
    """Best available providers for the device, CPU always last as the fallback for unsupported nodes."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device != "cuda":
        raise FcnDeployError(f"--device {device!r}: choose cpu or cuda")
    if "CUDAExecutionProvider" not in available:
        raise MissingDependencyError(
            f"--device cuda: this onnxruntime has no CUDA provider (available: {', '.join(available)}); "
            "install onnxruntime-gpu instead of onnxruntime, or use --device cpu"
        )
    providers: list[Any] = []
    if "TensorrtExecutionProvider" in available:
        # Building a TensorRT engine takes minutes on a Jetson: cache it (ORT keys the cache by model hash).
        providers.append(
            (
                "TensorrtExecutionProvider",
                {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(TRT_CACHE)},
            )
        )
    return [*providers, "CUDAExecutionProvider", "CPUExecutionProvider"]


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        providers: list[Any] | None = None,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        model = load_onnx(self.path)
        self.card = ModelCard.from_onnx(model, str(self.path))
        available = ort.get_available_providers()
        self.providers = providers if providers is not None else choose_providers(device, available)
        if any(
            str(p[0] if isinstance(p, tuple) else p) == "TensorrtExecutionProvider" for p in self.providers
        ):
            TRT_CACHE.mkdir(parents=True, exist_ok=True)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # an FCN is one chain: parallelism is intra-op
        opts.inter_op_num_threads = 1
        # The pipeline's capture/draw/write threads share these cores: idle ORT workers must sleep, not spin.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=self.providers)
        except (
            Exception
        ) as e:  # ORT's typed errors (InvalidGraph, Fail, ...) all mean this file cannot run here
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise FcnDeployError(
                f"{self.path}: ONNX Runtime cannot load it ({first}); re-export the model"
            ) from None
        del model

        inputs = {i.name: i for i in self.session.get_inputs()}
        if self.card.input_name not in inputs:
            raise FcnDeployError(
                f"{self.path}: model card names input {self.card.input_name!r} but the graph has "
                f"{sorted(inputs)}; re-export the model"
            )
        shape = inputs[self.card.input_name].shape
        # A static H and W (ints in the graph) must be fed exactly; dynamic ones are strings or None.
        self.fixed_hw = (
            (shape[2], shape[3]) if isinstance(shape[2], int) and isinstance(shape[3], int) else None
        )
        graph_outputs = {o.name for o in self.session.get_outputs()}
        self._outputs = [(o.name, o.kind) for o in self.card.outputs if o.name in graph_outputs]
        if not self._outputs:
            raise FcnDeployError(
                f"{self.path}: none of the model card outputs {[o.name for o in self.card.outputs]} is in the graph "
                f"(graph outputs: {sorted(graph_outputs)}); re-export the model"
            )

    @property
    def input_sizes(self) -> ShapeRange:
        """A static graph takes exactly its H x W; a dynamic one the card's range."""
        if self.fixed_hw is None:
            return self.card.shapes
        return ShapeRange(self.fixed_hw, self.fixed_hw, self.fixed_hw)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind for _, kind in self._outputs)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        values = self.session.run([n for n, _ in self._outputs], {self.card.input_name: batch})
        return normalize_outputs({kind: v for (_, kind), v in zip(self._outputs, values, strict=True)})

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": str(self.path),
            "providers": self.session.get_providers(),
            "outputs": list(self.kinds),
            "fixed_hw": self.fixed_hw,
        }

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
