"""The one contract every inference backend implements, with every capability its callers need declared.

Callers (the pipeline, profile, scoring, report) read these attributes and never probe a backend with getattr:
a backend that lacks a capability says so through the declared default (None / False / an empty tuple).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np

from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.shapes import ShapeRange


class Backend(abc.ABC):
    """Load once, run batches, describe itself. Sources, pipelining, drawing, timing and scoring live elsewhere.

    Declared capabilities (override where a backend has them):
      input_sizes    the accepted HxW range (TensorRT profile, static graph, else the card's min/opt/max)
      output_kinds   what run() returns beside "labels": a subset of ("logits", "probs")
      device_timing  True when last_device_ms holds the device time of the last run (CUDA events)
      per_layer      True when layer_times() reports per-layer milliseconds
      concurrent()   a copy for several frames in flight at once (throughput streams), where it has one
    """

    name: str = "backend"
    card: ModelCard
    device_timing: bool = False
    per_layer: bool = False
    last_device_ms: float | None = None

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """N x 3 x H x W float32 (already preprocessed) -> outputs keyed by kind:
        "labels" (N x H x W integer class map) and, when the model has them, "logits" or "probs" (N x C x H x W).
        """

    @property
    def input_sizes(self) -> ShapeRange:
        return self.card.shapes

    @property
    def output_kinds(self) -> tuple[str, ...]:
        return tuple(o.kind for o in self.card.outputs if o.kind != "labels")

    def layer_times(self, batch: np.ndarray, iterations: int) -> list[dict[str, Any]]:
        """[{'name': layer, 'ms': mean per run}] for backends with per_layer; the others refuse."""
        raise FcnDeployError(
            f"--per-layer: the {self.name} backend does not report per-layer times; "
            "per-layer timing needs a TensorRT engine (run it on --backend tensorrt)"
        )

    def concurrent(self, streams: int) -> Backend | None:
        """The same model as a backend whose run() may be called from `streams` threads at once, each run on its
        share of the cores (the caller closes it); None where this backend has no such mode (the default)."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory, sessions, streams."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GraphBackend(Backend):
    """A backend over an ONNX graph (ONNX Runtime, OpenVINO): the card's input and outputs bound to the graph's."""

    _sizes: ShapeRange
    _outputs: list[tuple[str, str]]  # (graph output name, kind) for the card outputs the graph has

    def bind_graph(
        self, where: str, inputs: Sequence[str], static_hw: tuple[int, int] | None, outputs: Sequence[str]
    ) -> None:
        """Check the card against the graph's tensor names; a static H x W is the only size it takes."""
        if self.card.input_name not in inputs:
            raise FcnDeployError(
                f"{where}: model card names input {self.card.input_name!r} but the graph has "
                f"{sorted(inputs)}; re-export the model"
            )
        self._sizes = ShapeRange(static_hw, static_hw, static_hw) if static_hw else self.card.shapes
        self._outputs = [(o.name, o.kind) for o in self.card.outputs if o.name in outputs]
        if not self._outputs:
            raise FcnDeployError(
                f"{where}: none of the model card outputs {[o.name for o in self.card.outputs]} is in the graph "
                f"(graph outputs: {sorted(outputs)}); re-export the model"
            )

    @property
    def input_sizes(self) -> ShapeRange:
        """A static graph takes exactly its H x W; a dynamic one the card's range."""
        return self._sizes

    @property
    def output_kinds(self) -> tuple[str, ...]:
        return tuple(kind for _, kind in self._outputs if kind != "labels")
