"""Torch-free test models and media for the runtime tests (imported by tests/test_runtime_*.py, test_infer_cli.py).

The "channel" model is a 1x1 convolution with identity weights on unnormalised RGB, so its label at a pixel is
the index of the largest colour channel: pure red -> 0, green -> 1, blue -> 2. That makes every label predictable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fcn_deploy.core.card import ModelCard, Normalization, OutputSpec

CLASSES = ("red", "green", "blue")
PALETTE = ((250, 10, 20), (30, 240, 40), (50, 60, 230))
COLOURS = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255)}


def channel_card(outputs: tuple[str, ...]) -> ModelCard:
    return ModelCard.default(
        "fcn8s",
        3,
        class_names=CLASSES,
        palette=PALETTE,
        normalization=Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "RGB", 1.0 / 255.0),
        outputs=tuple(OutputSpec(k, k) for k in outputs),
        min_shape=(8, 8),
        max_shape=(1080, 1920),
    )


def make_channel_model(
    path: Path, outputs: tuple[str, ...] = ("labels", "logits"), card: bool = True, heavy_layers: int = 0
) -> Path:
    """N x 3 x H x W (dynamic) -> any of labels (N x H x W int64), logits, probs (N x 3 x H x W).

    heavy_layers adds 3x3 convolutions of 32 channels whose result is multiplied by 0 and added back, so the
    labels stay predictable while each frame costs real compute (for tests that must interrupt a running job).
    """
    nodes, inits = [], [numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w_id")]
    nodes.append(helper.make_node("Conv", ["image", "w_id"], ["scores0"]))
    scores = "scores0"
    if heavy_layers:
        rng = np.random.default_rng(0)
        prev, ch = "image", 3
        for i in range(heavy_layers):
            w = (rng.standard_normal((32, ch, 3, 3)) * 0.1).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"hw{i}"))
            nodes.append(helper.make_node("Conv", [prev, f"hw{i}"], [f"h{i}"], pads=[1, 1, 1, 1]))
            prev, ch = f"h{i}", 32
        inits.append(numpy_helper.from_array(np.zeros((3, 32, 1, 1), np.float32), "w_zero"))
        nodes.append(helper.make_node("Conv", [prev, "w_zero"], ["hz"]))
        nodes.append(helper.make_node("Add", ["scores0", "hz"], ["scores1"]))
        scores = "scores1"
    outs = []
    dims = ["N", 3, "H", "W"]
    if "logits" in outputs:
        nodes.append(helper.make_node("Identity", [scores], ["logits"]))
        outs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, dims))
    if "probs" in outputs:
        nodes.append(helper.make_node("Softmax", [scores], ["probs"], axis=1))
        outs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, dims))
    if "labels" in outputs:
        nodes.append(helper.make_node("ArgMax", [scores], ["labels"], axis=1, keepdims=0))
        outs.append(helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", "H", "W"]))
    graph = helper.make_graph(
        nodes, "channel", [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)], outs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if card:
        channel_card(outputs).attach(model)
    onnx.save(model, str(path))
    return path


def colour_image(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image of pure red/green/blue vertical bands (band order shifted by seed) and its true labels."""
    labels = np.zeros((h, w), np.uint8)
    for b in range(3):
        labels[:, b * w // 3 : (b + 1) * w // 3] = (b + seed) % 3
    image = np.zeros((h, w, 3), np.uint8)
    for c, rgb in COLOURS.items():
        image[labels == c] = rgb
    return image, labels


def write_video(
    path: Path, frames: int, size: tuple[int, int] = (48, 64), fps: float = 25.0
) -> list[np.ndarray]:
    """MJPG .avi of colour-band frames (bands shift every frame); returns the RGB frames written."""
    import cv2

    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    out = []
    for i in range(frames):
        image, _ = colour_image(h, w, i)
        image = image.copy()
        image[:4, :4] = (i * 7) % 256  # a brightness tag so frames are distinguishable
        writer.write(image[:, :, ::-1].copy())
        out.append(image)
    writer.release()
    return out


def count_video_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        return -1
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n
