"""What every backend returns: a label map keyed "labels", plus scores when the model has them."""

from __future__ import annotations

import numpy as np

from fcn_deploy.core.errors import FcnDeployError


def scores_to_labels(scores: np.ndarray) -> np.ndarray:
    """N x C x H x W scores -> N x H x W class map (argmax over classes; softmax does not change it)."""
    labels = scores.argmax(axis=1)
    return labels.astype(np.uint8 if scores.shape[1] <= 256 else np.int32)


def normalize_outputs(outs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Shared by every backend: labels N x H x W (squeezing a singleton channel), argmax when only scores exist."""
    if "labels" in outs:
        labels = outs["labels"]
        if labels.ndim == 4 and labels.shape[1] == 1:
            outs["labels"] = labels[:, 0]
    else:
        scores = outs.get("probs", outs.get("logits"))
        if scores is None:
            raise FcnDeployError(
                "model has no labels, logits or probs output; re-export it with `fcn-deploy export`"
            )
        outs["labels"] = scores_to_labels(scores)
    return outs
