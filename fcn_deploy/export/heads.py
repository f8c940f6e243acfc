"""What the exported graph returns: the FCN's logits wrapped into the output head a deployment wants.

`labels` is the default: ArgMax inside the graph turns C float scores per pixel into one int32 class id, so a
360x480 frame leaves the device as 0.7 MB instead of 14.5 MB of scores (21 classes). Why int32: TensorRT lowers
ArgMax to TopK, whose indices are int32 (the 10.x parser casts them to int64 for ONNX's sake and our Cast takes
them back, an element-wise pair at the end of the net); uint8 would be 4x smaller again, but TensorRT documents
its UINT8 conversions for float/half tensors at the network boundary, not from integer indices, so it is a
build risk on the oldest target (10.3) and caps the classes at 256; int64 doubles the bytes for nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from fcn_deploy.core.card import OutputSpec
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.export.options import HEADS

LABEL_DTYPE = torch.int32


def output_specs(head: str) -> tuple[OutputSpec, ...]:
    """Output names and kinds, in graph order; the names equal the kinds ("labels", "logits", "probs")."""
    if head not in HEADS:
        raise FcnDeployError(f"unknown --head {head!r}; choose one of {', '.join(HEADS)}")
    return tuple(OutputSpec(kind, kind) for kind in head.split("+"))


def output_axes(spec: OutputSpec, dims: dict[int, str]) -> dict[int, str]:
    """Dynamic-axis names of one output given the input's ({0: batch, 2: height, 3: width} or a subset)."""
    if spec.kind == "labels":  # N x H x W: the class axis is gone
        return {(i if i == 0 else i - 1): name for i, name in dims.items()}
    return dict(dims)


class ExportHead(nn.Module):
    """model(image) -> the head's outputs, in output_specs(head) order."""

    def __init__(self, model: nn.Module, head: str) -> None:
        super().__init__()
        self.model = model
        self.kinds = tuple(s.kind for s in output_specs(head))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(image)
        outs = {
            "logits": lambda: logits,
            "probs": lambda: torch.softmax(logits, dim=1),
            "labels": lambda: torch.argmax(logits, dim=1).to(LABEL_DTYPE),
        }
        return tuple(outs[k]() for k in self.kinds)
