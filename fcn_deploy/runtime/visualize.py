"""Drawing segmentation results: overlay, mask, side-by-side, class heat maps (with a colour bar), legend and an
FPS line. Text, legend and colour bar are sized to the frame.

All images are HxWx3 uint8 RGB. Colours and class names come from the model card only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.runtime.opencv import import_cv2

MODES = ("overlay", "mask", "side-by-side", "heatmap")
MIN_BAR_FRAME_PX = 96  # smaller frames get no colour bar


def palette_lut(palette: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """256 (or more) x 3 lookup table; labels without a colour (e.g. ignore 255) draw black."""
    lut = np.zeros((max(256, len(palette)), 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    return lut


def colorize(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    if len(lut) == 256:
        # Up to 256 classes: one 4-byte gather per pixel from the table packed as RGBA words, then OpenCV drops the
        # alpha byte: 2x faster than cv2.LUT on a 3-channel label image, 9x faster than numpy's row indexing (the
        # video pipeline colours every frame).
        cv2 = import_cv2()
        u8 = labels if labels.dtype == np.uint8 else labels.astype(np.uint8)
        words = np.zeros((256, 4), np.uint8)
        words[:, :3] = lut
        rgba = np.take(words.view(np.uint32).ravel(), u8).view(np.uint8).reshape(*u8.shape, 4)
        return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)
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


def text_scale(height: int) -> float:
    """OpenCV font scale for text on a picture `height` pixels high: 0.5 at 480 px, 0.35 at the least."""
    return max(0.35, 0.5 * height / 480)


def put_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.5) -> None:
    """White text on a dark outline (both as thick as the text is large), in place."""
    cv2 = import_cv2()
    thin = max(1, round(2 * scale))
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thin + 2, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thin, cv2.LINE_AA)


def text_size(text: str, scale: float) -> tuple[int, int]:
    """(width, height above the baseline) of `text` as put_text draws it."""
    cv2 = import_cv2()
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, round(2 * scale)) + 2)
    return w, h


def legend_row_px(panel_height: int) -> int:
    """Height of one legend row: 1/24 of the panel (20 px at 480), 12 to 48 px."""
    return int(np.clip(round(panel_height / 24), 12, 48))


def draw_legend(image: np.ndarray, labels: np.ndarray, card: ModelCard, lut: np.ndarray,
                panel: tuple[int, int] | None = None) -> tuple[int, int, int, int] | None:  # fmt: skip
    """Swatch + name of each class present in `labels`, in place, at the top right of the panel spanning columns
    panel = (x0, x1) of `image` (the whole image by default), sized to the panel's height and never leaving it;
    the rows that do not fit are left out. Returns the legend's box (x0, y0, x1, y1), None when nothing fits."""
    cv2 = import_cv2()
    px0, px1 = panel or (0, image.shape[1])
    row = legend_row_px(image.shape[0])
    swatch, pad, scale = round(0.7 * row), max(2, row // 4), row / 40
    room = px1 - px0 - 2 * pad - swatch - pad  # width left for a name
    present = [int(c) for c in np.unique(labels) if 0 <= c < card.num_classes]
    names = []
    for c in present[: max(0, (image.shape[0] - 2 * pad) // row)]:
        name = card.class_names[c][:24]
        while name and text_size(name, scale)[0] > room:
            name = name[:-1]
        names.append((c, name))
    if not names or room < 1:
        return None
    width = swatch + pad + max(text_size(n, scale)[0] for _, n in names) + 2 * pad
    x1 = px1 - pad
    x0 = max(px0 + pad, x1 - width)
    y0, y1 = pad, pad + len(names) * row + pad // 2
    image[y0:y1, x0:x1] //= 2  # a darker backing so that names read on any scene
    for i, (c, name) in enumerate(names):
        top = y0 + pad // 2 + i * row + (row - swatch) // 2
        image[top : top + swatch, x0 + pad : x0 + pad + swatch] = lut[c]
        cv2.rectangle(image, (x0 + pad, top), (x0 + pad + swatch - 1, top + swatch - 1), (255, 255, 255), 1)
        put_text(image, name, (x0 + 2 * pad + swatch, top + swatch - max(1, swatch // 8)), scale)
    return x0, y0, x1, y1


def colour_bar_box(height: int, width: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the heat map's colour bar: at the right edge, half the frame high, 1/40 of it wide;
    None for a frame under MIN_BAR_FRAME_PX on a side (a bar there would hide much of the heat map)."""
    if min(height, width) < MIN_BAR_FRAME_PX:
        return None
    pad = max(3, round(0.02 * min(height, width)))
    bar_w, bar_h = max(6, round(width / 40)), round(height / 2)
    _, text_h = text_size("1", text_scale(height))
    x1, y0 = width - pad, pad + text_h
    return x1 - bar_w, y0, x1, y0 + bar_h


def draw_colour_bar(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """The probability scale in place: the jet colours from 1 (top) to 0 (bottom), outlined, ticked 1 / 0.5 / 0
    on its left. Returns its box (see colour_bar_box)."""
    box = colour_bar_box(*image.shape[:2])
    if box is None:
        return None
    cv2 = import_cv2()
    x0, y0, x1, y1 = box
    ramp = colormap(np.linspace(1.0, 0.0, y1 - y0)[:, None])  # (bar_h, 1, 3)
    image[y0:y1, x0:x1] = ramp
    cv2.rectangle(image, (x0 - 1, y0 - 1), (x1, y1), (0, 0, 0), 1)
    scale = text_scale(image.shape[0])
    for value, y in ((1.0, y0), (0.5, (y0 + y1) // 2), (0.0, y1)):
        text = f"{value:g}"
        w, h = text_size(text, scale)
        put_text(image, text, (x0 - 4 - w, min(image.shape[0] - 2, y + h // 2)), scale)
    return box


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
            put_text(out, f"P({self.card.class_names[spec.heat_class]})", (6, out.shape[0] - 8),
                     text_scale(out.shape[0]))  # fmt: skip
            draw_colour_bar(out)
            return out
        colour = colorize(labels, self.lut)
        if spec.mode == "mask":
            out = colour
        elif spec.mode == "overlay":
            out = blend(frame, colour, spec.alpha)
        else:
            out = np.concatenate([frame, blend(frame, colour, spec.alpha)], axis=1)
        if spec.legend:  # side-by-side: inside the overlay panel (the right one)
            out = np.ascontiguousarray(out)
            w = frame.shape[1]
            draw_legend(out, labels, self.card, self.lut, (w, 2 * w) if spec.mode == "side-by-side" else None)
        return out


def draw_stats_line(image: np.ndarray, fps: float, latency_ms: float) -> np.ndarray:
    out = np.ascontiguousarray(image).copy()
    put_text(out, f"{fps:5.1f} FPS  latency {latency_ms:6.1f} ms", (6, 18))
    return out
