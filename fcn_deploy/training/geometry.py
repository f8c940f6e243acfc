"""Crop offsets derived from the layer geometry (Caffe's coord_map), independent of the hand-set table in fcn.py.

Each blob maps its coordinate y to input-pixel coordinate x = a*y + b. Conv/pool (k, s, p): a' = a*s,
b' = b + a*((k-1)/2 - p). Transposed conv (k, s, p): a' = a/s, b' = b + a*(p - (k-1)/2)/s. Cropping blob A against
reference R needs equal a and offset (b_R - b_A) / a, which must be a non-negative integer.
"""

from __future__ import annotations

from fractions import Fraction

from torch import nn

from fcn_deploy.training.fcn import FCN

Map = tuple[Fraction, Fraction]


def _through(m: nn.Module, cmap: Map) -> Map:
    a, b = cmap
    k = m.kernel_size[0] if isinstance(m.kernel_size, tuple) else m.kernel_size
    s = m.stride[0] if isinstance(m.stride, tuple) else m.stride
    p = m.padding[0] if isinstance(m.padding, tuple) else m.padding
    half = Fraction(k - 1, 2)
    if isinstance(m, nn.ConvTranspose2d):
        return a / s, b + a * (p - half) / s
    return a * s, b + a * (half - p)


def _offset(cropped: Map, ref: Map) -> Fraction:
    if cropped[0] != ref[0]:
        raise AssertionError(f"crop between blobs of different strides {cropped[0]} vs {ref[0]}")
    return (ref[1] - cropped[1]) / cropped[0]


def derived_offsets(model: FCN) -> dict[str, Fraction]:
    """Offsets with the same keys as model.crop_offsets, computed from the modules' kernel/stride/padding."""
    cmap: Map = (Fraction(1), Fraction(0))
    pools: dict[str, Map] = {}
    for i, names in enumerate(model.stage_names, start=1):
        for name in names:
            cmap = _through(getattr(model, name), cmap)
        cmap = _through(model.pool, cmap)
        pools[f"pool{i}"] = cmap
    score = _through(model.fc7, _through(model.fc6, cmap))  # score_fr is 1x1
    image: Map = (Fraction(1), Fraction(0))
    same = model.config.padding == "same"
    out: dict[str, Fraction] = {}
    if model.head == "fcn32s":
        out["final"] = _offset(_through(model.upscore, score), image)
        return out
    up = _through(model.upscore2, score)
    out["score_pool4"] = _offset(up, pools["pool4"]) if same else _offset(pools["pool4"], up)
    fuse = pools["pool4"] if same else up
    if model.head == "fcn16s":
        out["final"] = _offset(_through(model.upscore16, fuse), image)
        return out
    up = _through(model.upscore_pool4, fuse)
    out["score_pool3"] = _offset(up, pools["pool3"]) if same else _offset(pools["pool3"], up)
    fuse = pools["pool3"] if same else up
    out["final"] = _offset(_through(model.upscore8, fuse), image)
    return out
