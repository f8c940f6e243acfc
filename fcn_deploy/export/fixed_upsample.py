"""The fixed bilinear upsampling of an FCN in the two exact forms `--upsample` can write instead of ConvTranspose.

A ConvTranspose(k = 2s, stride s, padding p) with the bilinear kernel on its diagonal outputs, at pixel x, the
linear interpolation of the coarse map at u = (x + p + 0.5) / s - 1, with zeros outside the map (fcn.md section 6
item 5; the padded deconv is the unpadded one cropped at p). Both forms keep the deconv's output length
(n + 1) * s - 2p, so every later crop of the model is unchanged, and both are exact only while the kernels are the
fixed bilinear ones, which `check_fixed_bilinear` enforces.

- `resize`: Pad by one zero on each side -> Resize(linear, half_pixel) by s -> Slice from p + s/2. Resize is what
  TensorRT handles well in INT8, where quantized ConvTranspose is a known trouble spot (fcn.md 6 item 4).
- `matmul`: the interpolation is separable, Y = A_h X A_w^T with A[x, j] = max(0, 1 - |x + p - s j - s + 1/2| / s)
  (the 1-D bilinear kernel at tap x + p - s j; exactly 0 off its 2s taps), so two MatMuls against matrices built
  from the map's shape (integer Range, Cast). ONNX Runtime's ConvTranspose scatters each input pixel over k^2
  outputs (col2im): on the CamVid FCN-8s of docs/camvid_recipe.md at 360x480 (2-core AMX Xeon) the final 8x deconv
  took 12.8-14.9 ms of ORT's kernel time and its two MatMuls 1.3 ms. The matrices' nodes depend on shapes alone:
  INT8 lowering never quantizes them (calibration.int8.shape_only_nodes).

`--upsample auto` (the default) takes the matmul form wherever it is exact and keeps the deconvs otherwise (learned
upsampling). Measured on that model and machine (21 interleaved rounds, ONNX Runtime with its bounded spinning, one
run), matmul / deconv graph time: ORT FP32 0.88x, ORT-flavour INT8 0.75x, OpenVINO FP32 0.87x, BF16 0.94x, INT8
0.75x (ORT flavour) and 0.66x (TensorRT flavour). The resize form ran ORT FP32 0.91-0.93x and ORT INT8 0.85x of the
deconv graph but OpenVINO INT8 1.7x slower (25.8 vs 14.8 ms). Not run on TensorRT (no GPU here).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.training.fcn import FCN, bilinear_kernel


class FixedUpsample(nn.Module):
    """Drop-in for a fixed bilinear nn.ConvTranspose2d(C, C, 2s, stride s, padding p, bias=False)."""

    def __init__(self, stride: int, padding: int) -> None:
        super().__init__()
        self.stride = stride
        self.padding = padding


class ResizeUpsample(FixedUpsample):
    """Pad -> Resize(linear, half_pixel) -> Slice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, p = self.stride, self.padding
        h, w = x.shape[2], x.shape[3]
        y = F.interpolate(F.pad(x, (1, 1, 1, 1)), scale_factor=float(s), mode="bilinear", align_corners=False)
        start = p + s // 2
        return y[:, :, start : start + (h + 1) * s - 2 * p, start : start + (w + 1) * s - 2 * p]


def interpolation_matrix(n: torch.Tensor | int, stride: int, padding: int, like: torch.Tensor) -> torch.Tensor:
    """[(n + 1) * stride - 2 * padding, n]: row x holds the bilinear deconv's taps on coarse pixels 0..n-1 (module
    docstring). Built in integers as 2 |tap - centre| = |(2x + 2p - 2s + 1) - 2sj| (exact, few ONNX nodes) and
    divided once, so the taps equal the deconv's weights."""
    s, p = stride, padding
    start = 2 * p - 2 * s + 1
    rows = torch.arange(start, start + 2 * ((n + 1) * s - 2 * p), 2, device=like.device)
    cols = torch.arange(0, 2 * s * n, 2 * s, device=like.device)
    return torch.relu(1 - (rows[:, None] - cols[None, :]).abs().to(like.dtype) / (2 * s))


class MatmulUpsample(FixedUpsample):
    """A_h X A_w^T."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_h = interpolation_matrix(x.shape[2], self.stride, self.padding, x)
        a_w = interpolation_matrix(x.shape[3], self.stride, self.padding, x)
        return torch.matmul(a_h, torch.matmul(x, a_w.t()))  # width first: n*m*W + n*H*W < n*m*H + m*H*W


def check_fixed_bilinear(model: FCN, form: str = "resize") -> None:
    """Refuse models whose upsampling was learned: the exact forms equal only the bilinear kernel."""
    if model.config.learn_upsampling:
        raise FcnDeployError(
            f"--upsample {form} needs fixed bilinear upsampling, but this model was trained with "
            "learn_upsampling=True; export with --upsample deconv"
        )
    for name, deconv in model.upsamplers():
        k, s = deconv.kernel_size[0], deconv.stride[0]
        ok = (
            k == 2 * s
            and deconv.bias is None
            and deconv.groups == 1
            and torch.allclose(deconv.weight.detach().cpu(), bilinear_kernel(deconv.in_channels, k), atol=1e-6)
        )
        if not ok:
            raise FcnDeployError(
                f"--upsample {form}: {name} is not the fixed bilinear kernel (its weights were changed); "
                "export with --upsample deconv"
            )


def resolve_upsample(model: FCN, mode: str) -> str:
    """The upsampling an export with `--upsample mode` writes: `auto` is `matmul` where that form is exact (fixed
    bilinear kernels), else `deconv`; an exact form on a model with learned kernels is refused
    (check_fixed_bilinear)."""
    if mode != "auto":
        return mode
    try:
        check_fixed_bilinear(model)
    except FcnDeployError:
        return "deconv"
    return "matmul"


FORMS = {"resize": ResizeUpsample, "matmul": MatmulUpsample}


def with_fixed_upsampling(model: FCN, form: str) -> FCN:
    """A copy of `model` whose upsamplers are `form` modules (FORMS; the original is left untouched)."""
    check_fixed_bilinear(model, form)
    out = copy.deepcopy(model)
    for name, deconv in model.upsamplers():
        setattr(out, name, FORMS[form](deconv.stride[0], deconv.padding[0]))
    return out
