"""Drawing segmentation results: overlay, mask, side-by-side, class heat maps, legend and an FPS line.

All images are HxWx3 uint8 RGB. Colours and class names come from the model card only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.runtime.opencv import import_cv2

MODES = ("overlay", "mask", "side-by-side", "heatmap")


def palette_lut(palette: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """256 (or more) x 3 lookup table; labels without a colour (e.g. ignore 255) draw black."""
    lut = np.zeros((max(256, len(palette)), 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    return lut


def colorize(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    if len(lut) == 256:  # up to 256 classes: OpenCV's table lookup, ~6x faster than numpy indexing
        cv2 = import_cv2()
        u8 = labels if labels.dtype == np.uint8 else labels.astype(np.uint8)
        return cv2.LUT(cv2.merge([u8, u8, u8]), lut.reshape(256, 1, 3))
    return lut[np.clip(labels.astype(np.intp, copy=False), 0, len(lut) - 1)]


def blend(frame: np.ndarray, colour: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - alpha) * frame + alpha * colour, rounded (exact for alpha 0 and 1)."""
    cv2 = import_cv2()
    return cv2.addWeighted(frame, 1.0 - alpha, colour, alpha, 0.0)


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def colormap(values01: np.ndarray) -> np.ndarray:
    """Probability in [0, 1] -> RGB jet colour map (blue = 0, red = 1), as in the paper's heat map figure."""
    cv2 = import_cv2()
    u8 = np.clip(np.rint(values01 * 255), 0, 255).astype(np.uint8)
    return cv2.applyColorMap(u8, cv2.COLORMAP_JET)[:, :, ::-1]


def resolve_class(card: ModelCard, name: str) -> int:
    """'cat' or '8' -> class index, from the model card."""
    if name in card.class_names:
        return card.class_names.index(name)
    if name.isdigit() and int(name) < card.num_classes:
        return int(name)
    shown = ", ".join(card.class_names[:30]) + (", ..." if card.num_classes > 30 else "")
    raise FcnDeployError(f"heatmap class {name!r} is not in this model; its classes are: {shown}")


def put_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.5) -> None:
    """White text on a dark outline, in place."""
    cv2 = import_cv2()
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw_legend(image: np.ndarray, labels: np.ndarray, card: ModelCard, lut: np.ndarray) -> None:
    """Swatch + name of each class present in `labels`, top-right, in place."""
    present = [int(c) for c in np.unique(labels) if 0 <= c < card.num_classes]
    row, x0 = 16, max(image.shape[1] - 150, 0)
    for i, c in enumerate(present):
        y = 6 + i * row
        if y + row > image.shape[0]:
            break
        image[y : y + 12, x0 : x0 + 12] = lut[c]
        put_text(image, card.class_names[c][:18], (x0 + 16, y + 11), 0.4)


@dataclass(frozen=True)
class VisualizeSpec:
    mode: str = "overlay"
    heat_class: int | None = None
    alpha: float = 0.5
    legend: bool = False

    @classmethod
    def parse(cls, text: str, card: ModelCard, alpha: float = 0.5, legend: bool = False) -> VisualizeSpec:
        mode, _, arg = text.partition(":")
        if mode not in MODES:
            raise FcnDeployError(f"--visualize {text!r}: choose overlay, mask, side-by-side or heatmap:CLASS")
        if not 0.0 <= alpha <= 1.0:
            raise FcnDeployError(f"--alpha {alpha}: must be between 0 and 1")
        if mode == "heatmap":
            if not arg:
                raise FcnDeployError("--visualize heatmap needs a class, e.g. heatmap:cat or heatmap:8")
            return cls(mode, resolve_class(card, arg), alpha, legend)
        if arg:
            raise FcnDeployError(f"--visualize {text!r}: only heatmap takes a :CLASS argument")
        return cls(mode, None, alpha, legend)

    @property
    def needs_scores(self) -> bool:
        return self.mode == "heatmap"


class Visualizer:
    def __init__(self, card: ModelCard, spec: VisualizeSpec) -> None:
        self.card, self.spec = card, spec
        self.lut = palette_lut(card.palette)

    def render(
        self, frame: np.ndarray, labels: np.ndarray, scores: np.ndarray | None = None, is_probs: bool = False
    ) -> np.ndarray:
        """frame HxWx3 RGB, labels HxW (frame size), scores C x h x w (any size; heat map only)."""
        spec = self.spec
        if spec.mode == "heatmap":
            if scores is None:
                raise FcnDeployError(
                    "heatmap needs a model that outputs logits or probs; re-export with a scores output "
                    "(e.g. `fcn-deploy export --head labels+probs`)"
                )
            prob = scores[spec.heat_class] if is_probs else softmax(scores, 0)[spec.heat_class]
            if prob.shape != frame.shape[:2]:
                cv2 = import_cv2()
                prob = cv2.resize(prob.astype(np.float32), (frame.shape[1], frame.shape[0]),
                                  interpolation=cv2.INTER_LINEAR)  # fmt: skip
            out = blend(frame, colormap(prob), spec.alpha)
            put_text(out, f"P({self.card.class_names[spec.heat_class]})", (6, out.shape[0] - 8))
            return out
        colour = colorize(labels, self.lut)
        if spec.mode == "mask":
            out = colour
        elif spec.mode == "overlay":
            out = blend(frame, colour, spec.alpha)
        else:
            out = np.concatenate([frame, blend(frame, colour, spec.alpha)], axis=1)
        if spec.legend:
            out = np.ascontiguousarray(out)
            draw_legend(out, labels, self.card, self.lut)
        return out


def draw_stats_line(image: np.ndarray, fps: float, latency_ms: float) -> np.ndarray:
    out = np.ascontiguousarray(image).copy()
    put_text(out, f"{fps:5.1f} FPS  latency {latency_ms:6.1f} ms", (6, 18))
    return out
