"""The one small interface every inference backend implements."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from fcn_deploy.core.card import ModelCard


class Backend(abc.ABC):
    """Load once, run batches, describe itself. Sources, pipelining, drawing and timing live elsewhere."""

    name: str = "backend"
    card: ModelCard

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """N x 3 x H x W float32 (already preprocessed) -> outputs keyed by kind:
        "labels" (N x H x W integer class map) and, when the model has them, "logits" or "probs" (N x C x H x W).
        """

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory, sessions, streams."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
