"""FCN-32s/16s/8s/8s-at-once on a VGG16 trunk, exact to Long, Shelhamer & Darrell (see shared/reference/fcn.md).

Alignment: every crop takes a fixed offset plus the reference tensor's runtime shape, so any H, W works and the
ONNX export keeps the crops shape-dependent. Offsets follow from the coordinate map x = a*y + b of each blob:
- `paper` (conv1_1 pad 100, fc6 7x7 valid): upsampling unpadded, crops 19 (32s); 5, 27 (16s); 5, 9, 31 (8s).
- `same` (conv1_1 pad 1, fc6 pad 3): each transposed conv is padded by (k - s) / 2, which maps its output
  exactly onto the skip blob / the input, so every crop offset is 0 (the crop only trims the extra row/column
  that ceil-mode pooling adds).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from fcn_deploy.core.model_config import ModelConfig

# (name, in, out) of the 13 VGG16 convolutions, grouped by pooling stage.
VGG_STAGES = (
    (("conv1_1", 3, 64), ("conv1_2", 64, 64)),
    (("conv2_1", 64, 128), ("conv2_2", 128, 128)),
    (("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256)),
    (("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512)),
    (("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)),
)
FC_CHANNELS = 4096
AT_ONCE_SCALES = {"pool4": 0.01, "pool3": 0.0001}

# Upsampling stages per variant: (layer name, kernel, stride).
UPSAMPLERS = {
    "fcn32s": (("upscore", 64, 32),),
    "fcn16s": (("upscore2", 4, 2), ("upscore16", 32, 16)),
    "fcn8s": (("upscore2", 4, 2), ("upscore_pool4", 4, 2), ("upscore8", 16, 8)),
}
# Crop offsets of the paper geometry: skip crops (applied to the score_pool* blob) and the final crop.
PAPER_OFFSETS = {
    "fcn32s": {"final": 19},
    "fcn16s": {"score_pool4": 5, "final": 27},
    "fcn8s": {"score_pool4": 5, "score_pool3": 9, "final": 31},
}


def head_of(variant: str) -> str:
    return "fcn8s" if variant == "fcn8s-atonce" else variant


def bilinear_kernel(channels: int, k: int) -> torch.Tensor:
    """Dense [C, C, k, k] transposed-conv weight: bilinear on the diagonal, zero across classes (Caffe surgery)."""
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 == 1 else factor - 0.5
    og = torch.arange(k, dtype=torch.float64)
    filt1d = 1 - (og - centre).abs() / factor
    filt = (filt1d[:, None] * filt1d[None, :]).float()
    weight = torch.zeros(channels, channels, k, k)
    weight[range(channels), range(channels)] = filt
    return weight


def crop_like(x: torch.Tensor, ref: torch.Tensor, offset: int) -> torch.Tensor:
    """Caffe Crop: the window at `offset` with the spatial shape of `ref` (read at run time, never baked in)."""
    h, w = ref.shape[2], ref.shape[3]
    return x[:, :, offset : offset + h, offset : offset + w]


class SampleDropout(nn.Module):
    """nn.Dropout whose masks can be drawn per sample from given seeds (set_seeds before a training forward), so a
    sample's mask does not depend on which process or batch slot it lands in: K data-parallel processes then
    train exactly like one. Without seeds it is nn.Dropout (torch's global RNG); in eval mode the identity."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p
        self.seeds: list[int] | None = None

    def set_seeds(self, seeds: list[int] | None) -> None:
        self.seeds = None if seeds is None else list(seeds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.seeds is None:
            return nn.functional.dropout(x, self.p, True)
        if len(self.seeds) != x.shape[0]:
            raise ValueError(f"{len(self.seeds)} dropout seeds for a batch of {x.shape[0]}")
        keep = torch.empty_like(x, dtype=torch.bool)
        for n, seed in enumerate(self.seeds):
            g = torch.Generator(device=x.device).manual_seed(seed)
            keep[n] = torch.rand(x.shape[1:], generator=g, device=x.device) >= self.p
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FCN(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        same = c.padding == "same"
        self.stage_names: list[list[str]] = []
        for stage in VGG_STAGES:
            names = []
            for name, cin, cout in stage:
                cin_w = 3 if name == "conv1_1" else c.channels(cin)
                pad = 100 if (name == "conv1_1" and not same) else 1
                setattr(self, name, nn.Conv2d(cin_w, c.channels(cout), 3, padding=pad))
                if c.batch_norm:
                    setattr(self, "bn" + name[4:], nn.BatchNorm2d(c.channels(cout)))
                names.append(name)
            self.stage_names.append(names)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        fc = c.channels(FC_CHANNELS)
        self.fc6 = nn.Conv2d(c.channels(512), fc, 7, padding=3 if same else 0)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.drop6 = SampleDropout(0.5)
        self.drop7 = SampleDropout(0.5)
        self.relu = nn.ReLU(inplace=True)
        n = c.num_classes
        self.head = head_of(c.variant)
        self.score_fr = nn.Conv2d(fc, n, 1)
        if self.head in ("fcn16s", "fcn8s"):
            self.score_pool4 = nn.Conv2d(c.channels(512), n, 1)
        if self.head == "fcn8s":
            self.score_pool3 = nn.Conv2d(c.channels(256), n, 1)
        for name, k, s in UPSAMPLERS[self.head]:
            deconv = nn.ConvTranspose2d(n, n, k, stride=s, padding=(k - s) // 2 if same else 0, bias=False)
            setattr(self, name, deconv)
        # Skip scalings of the at-once net; fold_skip_scales() moves them into the score layers for export.
        self.skip_scales = dict(AT_ONCE_SCALES) if c.variant == "fcn8s-atonce" else {"pool4": 1.0, "pool3": 1.0}
        self.reset_parameters()

    @property
    def crop_offsets(self) -> dict[str, int]:
        if self.config.padding == "same":
            return {k: 0 for k in PAPER_OFFSETS[self.head]}
        return dict(PAPER_OFFSETS[self.head])

    def upsamplers(self) -> Iterator[tuple[str, nn.ConvTranspose2d]]:
        for name, _, _ in UPSAMPLERS[self.head]:
            yield name, getattr(self, name)

    def reset_parameters(self) -> None:
        """Score layers zero (paper 4.2/4.3), upsampling bilinear, trunk Kaiming (replaced by VGG16 transfer)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for name in ("score_fr", "score_pool4", "score_pool3"):
            if hasattr(self, name):
                nn.init.zeros_(getattr(self, name).weight)
                nn.init.zeros_(getattr(self, name).bias)
        for _, deconv in self.upsamplers():
            with torch.no_grad():
                deconv.weight.copy_(bilinear_kernel(self.config.num_classes, deconv.kernel_size[0]))
            deconv.weight.requires_grad_(self.config.learn_upsampling)

    def _trunk(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = {}
        for i, names in enumerate(self.stage_names, start=1):
            for name in names:
                x = getattr(self, name)(x)
                if self.config.batch_norm:
                    x = getattr(self, "bn" + name[4:])(x)
                x = self.relu(x)
            x = self.pool(x)
            feats[f"pool{i}"] = x
        return feats

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W normalised image -> N x C x H x W class scores (logits)."""
        feats = self._trunk(image)
        x = self.drop6(self.relu(self.fc6(feats["pool5"])))
        x = self.drop7(self.relu(self.fc7(x)))
        score = self.score_fr(x)
        off = self.crop_offsets
        if self.head == "fcn32s":
            return crop_like(self.upscore(score), image, off["final"])
        pool4 = feats["pool4"] * self.skip_scales["pool4"] if self.skip_scales["pool4"] != 1.0 else feats["pool4"]
        sp4 = self.score_pool4(pool4)
        up = self.upscore2(score)
        if self.config.padding == "same":
            fuse = crop_like(up, sp4, 0) + sp4
        else:
            fuse = up + crop_like(sp4, up, off["score_pool4"])
        if self.head == "fcn16s":
            return crop_like(self.upscore16(fuse), image, off["final"])
        pool3 = feats["pool3"] * self.skip_scales["pool3"] if self.skip_scales["pool3"] != 1.0 else feats["pool3"]
        sp3 = self.score_pool3(pool3)
        up = self.upscore_pool4(fuse)
        if self.config.padding == "same":
            fuse = crop_like(up, sp3, 0) + sp3
        else:
            fuse = up + crop_like(sp3, up, off["score_pool3"])
        return crop_like(self.upscore8(fuse), image, off["final"])

    def set_dropout_seeds(self, seeds: list[int] | None) -> None:
        """Per-sample seeds of the next training forward's dropout masks (None: torch's global RNG)."""
        self.drop6.set_seeds(seeds)
        self.drop7.set_seeds(seeds)

    @torch.no_grad()
    def fold_skip_scales(self) -> None:
        """conv(s * x) = (s * W) x + b: fold the at-once skip scalings into score_pool4/3 (exact; FP16-safe)."""
        for pool, layer in (("pool4", "score_pool4"), ("pool3", "score_pool3")):
            s = self.skip_scales[pool]
            if s != 1.0 and hasattr(self, layer):
                getattr(self, layer).weight.mul_(s)
                self.skip_scales[pool] = 1.0

    def parameter_counts(self) -> dict[str, int]:
        learned = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return {"params_learned": learned, "params_total": total}


def build_model(config: ModelConfig) -> FCN:
    return FCN(config)


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """Multiply-adds of convolutions and transposed convolutions at one input size, and the output size."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal total
        k = math.prod(m.kernel_size)
        if isinstance(m, nn.ConvTranspose2d):
            total += inp[0].numel() * (m.out_channels // m.groups) * k
        else:
            total += out.numel() * (m.in_channels // m.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(1, 3, *input_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total, (int(out.shape[2]), int(out.shape[3]))
