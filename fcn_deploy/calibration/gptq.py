"""INT8 weight rounding that minimises each Conv's output error (GPTQ, Frantar et al. 2022), not each weight's.

Round-to-nearest per-channel int8 weights were most of what plain INT8 lost on the CamVid FCN-8s: with every
activation Q/DQ removed the weights alone still cost 0.17 points of mean IoU (losses only) on the 32 plan images,
over a 0.1 budget, so `--auto` had to keep a third of FP32 time in FP32 (`benchmarks/int8_error_sources.py`).
GPTQ rounds the weights of one output channel column by column, spreading each rounding error over the columns
not yet rounded through the inverse of the layer input's second moment H = E[x x^T] (im2col rows of the Conv's
FP32 input on calibration images), so the output error W x - Q(W) x shrinks instead of the weight error.
Same grid, same per-channel scale (from each channel's max |w|, as ONNX Runtime's quantizer computes it), same
graph and kernels: only which grid point each weight takes changes, so speed does not.

`round_weights` returns, per Conv weight, the rounded weights as float values on the grid; `int8.quantize_qdq`
swaps them in for the Convs it quantizes (never for those kept in float) and pins each channel's range to the
original one, so ONNX Runtime's quantizer reproduces exactly these integers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

IMAGES = 32  # calibration images whose Conv inputs estimate H (the first of the range images)
POSITIONS = 4096  # output positions sampled per image and layer (seeded): H's cost stays bounded at any size
MAX_COLUMNS = 8192  # Convs with more inputs (C_in x k x k) keep round-to-nearest: H would take > 0.5 GB
DAMP = 0.01  # added to H's diagonal, as a share of its mean: GPTQ's default
BLOCK = 128  # columns rounded per block before the remaining columns are updated at once (GPTQ's lazy batches)


def eligible(model: Any) -> list[Any]:
    """The Conv nodes GPTQ rounds: group 1, a constant 4-D weight, at most MAX_COLUMNS inputs per output."""
    from onnx import helper

    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        dims = list(inits[node.input[1]].dims)
        if attrs.get("group", 1) != 1 or len(dims) != 4 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        if dims[1] * dims[2] * dims[3] <= MAX_COLUMNS:
            out.append(node)
    return out


def _columns(x: np.ndarray, node: Any, kernel: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """im2col rows (C*kh*kw x P) of one image's input `x` (C x H x W) at up to POSITIONS sampled output places."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    pt, pl, pb, pr = attrs.get("pads", [0, 0, 0, 0])
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    kh, kw = kernel
    x = np.pad(x, ((0, 0), (pt, pb), (pl, pr)))
    oh = (x.shape[1] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[2] - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        return np.zeros((x.shape[0] * kh * kw, 0), np.float32)
    places = np.arange(oh * ow)
    if places.size > POSITIONS:
        places = np.sort(rng.choice(places, POSITIONS, replace=False))
    ys, xs = places // ow * sh, places % ow * sw
    taps = [x[:, ys + i * dh, xs + j * dw] for i in range(kh) for j in range(kw)]  # each C x P
    return np.stack(taps, axis=1).reshape(x.shape[0] * kh * kw, places.size)  # (c, tap) order = weight layout


def second_moments(model_path: Any, feeds: Iterable[dict[str, np.ndarray]], nodes: list[Any],
                   images: int = IMAGES) -> dict[str, np.ndarray]:  # fmt: skip
    """H (float64, D x D) per Conv in `nodes`, from its FP32 input on the first `images` feeds."""
    import onnx

    from fcn_deploy.calibration.ranges import tensor_session

    inits = {t.name: t for t in onnx.load(str(model_path)).graph.initializer}
    kernels = {n.name: tuple(inits[n.input[1]].dims[2:]) for n in nodes}
    del inits
    wanted = sorted({n.input[0] for n in nodes})
    session = tensor_session(model_path, wanted)
    rng = np.random.default_rng(0)
    sums: dict[str, np.ndarray] = {}
    seen = 0
    for feed in feeds:
        if seen >= images:
            break
        seen += 1
        values = dict(zip(wanted, session.run(wanted, feed), strict=True))
        for node in nodes:
            for x in values[node.input[0]]:  # each image of the batch
                cols = _columns(x, node, kernels[node.name], rng).astype(np.float64)
                h = cols @ cols.T
                sums[node.name] = h if node.name not in sums else sums[node.name] + h
    return sums


def channel_scales(w: np.ndarray, bits: int) -> np.ndarray:
    """Per-output-channel scale of ONNX Runtime's symmetric int8 weights (reduce_range for 7 bits), computed by
    its own quantize_data so the grid is the one its quantizer builds."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    absmax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    return np.array([float(quantize_data(np.array([-a, a], np.float32), TensorProto.INT8, True,
                                         reduce_range=bits == 7)[1]) for a in absmax])  # fmt: skip


def gptq(w: np.ndarray, h: np.ndarray, scale: np.ndarray, qmax: int) -> np.ndarray:
    """Integer weights (Cout x D, float64) for `w` (Cout x D) on the per-row grid `scale`, clipped to +-qmax."""
    w = w.astype(np.float64).copy()
    h = h.copy()
    dead = np.diag(h) == 0  # inputs that were always 0: any weight there is free, round it to 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices_from(h)] += DAMP * float(np.mean(np.diag(h)))
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper Cholesky factor of H^-1
    s = scale[:, None]
    q = np.zeros_like(w)
    d = w.shape[1]
    for start in range(0, d, BLOCK):
        stop = min(start + BLOCK, d)
        block = w[:, start:stop].copy()
        errors = np.zeros_like(block)
        for i in range(stop - start):
            col = block[:, i]
            qi = np.clip(np.round(col / s[:, 0]), -qmax, qmax)
            q[:, start + i] = qi
            err = (col - qi * s[:, 0]) / hinv[start + i, start + i]
            block[:, i:] -= np.outer(err, hinv[start + i, start + i:stop])
            errors[:, i] = err
        w[:, stop:] -= errors @ hinv[start:stop, stop:]
    return q


def round_weights(model: Any, model_path: Any, feeds: Iterable[dict[str, np.ndarray]], bits: int,
                  keep_float: Iterable[str] = (), images: int = IMAGES) -> dict[str, np.ndarray]:  # fmt: skip
    """{weight name: GPTQ-rounded weights as float32 grid values} for every eligible Conv of `model` (the
    calibrated FP32 graph at `model_path`) not in `keep_float` (nodes no lowering quantizes: the float ends,
    --exclude), its H from `feeds`. A weight that several Convs share, or one whose Conv never saw a non-empty
    input, keeps round-to-nearest (absent here)."""
    from onnx import numpy_helper

    skip = set(keep_float)
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    candidates = [n for n in eligible(model) if n.name not in skip]
    nodes = [n for n in candidates if users.get(n.input[1]) == 1]
    moments = second_moments(model_path, feeds, nodes, images)
    inits = {t.name: t for t in model.graph.initializer}
    qmax = 127 if bits == 8 else 64
    out = {}
    for node in nodes:
        if node.name not in moments:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        scale = channel_scales(w, bits)
        scale[scale == 0] = 1.0  # an all-zero channel stays zero on any grid
        q = gptq(w.reshape(w.shape[0], -1), moments[node.name], scale, qmax)
        out[node.input[1]] = (q * scale[:, None]).reshape(w.shape).astype(np.float32)
    log.info("GPTQ rounded the weights of %d of the %d Convs INT8 may quantize (%d-bit)", len(out), len(candidates),
             bits)  # fmt: skip
    return out
