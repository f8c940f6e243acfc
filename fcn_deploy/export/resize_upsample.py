"""`--upsample resize`: each fixed bilinear ConvTranspose as Pad -> Resize(linear, half_pixel) -> Slice.

A ConvTranspose(k = 2s, stride s, padding p) with the bilinear kernel on its diagonal outputs, at pixel x, the
linear interpolation of the coarse map at u = (x + p + 0.5) / s - 1, with zeros outside the map (fcn.md section 6
item 5; the padded deconv is the unpadded one cropped at p). Padding the map by one zero on each side, resizing by
s with half_pixel coordinates and slicing from p + s/2 samples exactly that; the slice keeps the deconv's output
length (n + 1) * s - 2p, so every later crop of the model is unchanged. Resize is what TensorRT handles well in
INT8, where quantized ConvTranspose is a known trouble spot (fcn.md 6 item 4). Exact only while the kernels are
the fixed bilinear ones, which `check_fixed_bilinear` enforces.

`--upsample auto` takes this form wherever it is exact and keeps the deconvs otherwise (learned upsampling). Not the
default: measured on the CamVid FCN-8s of docs/camvid_recipe.md (2-core AMX Xeon, 360x480, interleaved loops), the
Resize form ran FP32 0.91-0.93x the deconv graph's time on ONNX Runtime and its ORT-flavour INT8 graph 0.85x, but
that INT8 graph ran 1.7x slower on OpenVINO (25.8 vs 14.8 ms), the runtime `--backend auto` sends INT8 graphs to;
accuracy is the same (with the decoder float: calibration.int8.float_ends).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.training.fcn import FCN, bilinear_kernel


class ResizeUpsample(nn.Module):
    """Drop-in for a fixed bilinear nn.ConvTranspose2d(C, C, 2s, stride s, padding p, bias=False)."""

    def __init__(self, stride: int, padding: int) -> None:
        super().__init__()
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, p = self.stride, self.padding
        h, w = x.shape[2], x.shape[3]
        y = F.interpolate(F.pad(x, (1, 1, 1, 1)), scale_factor=float(s), mode="bilinear", align_corners=False)
        start = p + s // 2
        return y[:, :, start : start + (h + 1) * s - 2 * p, start : start + (w + 1) * s - 2 * p]


def check_fixed_bilinear(model: FCN) -> None:
    """Refuse models whose upsampling was learned: the Resize form equals only the bilinear kernel."""
    if model.config.learn_upsampling:
        raise FcnDeployError(
            "--upsample resize needs fixed bilinear upsampling, but this model was trained with "
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
                f"--upsample resize: {name} is not the fixed bilinear kernel (its weights were changed); "
                "export with --upsample deconv"
            )


def resolve_upsample(model: FCN, mode: str) -> str:
    """The upsampling an export with `--upsample mode` writes: `auto` is `resize` where that form is exact (fixed
    bilinear kernels), else `deconv`; `resize` on a model with learned kernels is refused (check_fixed_bilinear)."""
    if mode != "auto":
        return mode
    try:
        check_fixed_bilinear(model)
    except FcnDeployError:
        return "deconv"
    return "resize"


def with_resize_upsampling(model: FCN) -> FCN:
    """A copy of `model` whose upsamplers are ResizeUpsample modules (the original is left untouched)."""
    check_fixed_bilinear(model)
    out = copy.deepcopy(model)
    for name, deconv in model.upsamplers():
        setattr(out, name, ResizeUpsample(deconv.stride[0], deconv.padding[0]))
    return out

