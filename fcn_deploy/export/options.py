"""What an export can be asked for: heads, upsampling, opset, dynamic axes, shapes (torch-free: the CLI imports
these choices and defaults, and a bad option fails before torch is loaded)."""

from __future__ import annotations

from dataclasses import dataclass

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.shapes import format_hw

HEADS = ("labels", "logits", "probs", "labels+probs")  # fcn_deploy.export.heads builds them
DEFAULT_HEAD = "labels"
DEFAULT_OPSET = 17
OPSET_RANGE = (13, 20)  # Softmax over one axis needs 13; TensorRT 10.3 parses up to 20
DYNAMIC_DIMS = {"batch": 0, "height": 2, "width": 3}
DEFAULT_DYNAMIC = tuple(DYNAMIC_DIMS)
UPSAMPLE_MODES = ("deconv", "resize", "matmul", "auto")  # auto: matmul where exact (fixed_upsample.resolve_upsample)
DEFAULT_UPSAMPLE = "auto"  # the matmul form where exact: faster on every CPU runtime row measured (fixed_upsample)


@dataclass(frozen=True)
class ExportOptions:
    head: str = DEFAULT_HEAD
    upsample: str = DEFAULT_UPSAMPLE
    opset: int = DEFAULT_OPSET
    dynamic: tuple[str, ...] = DEFAULT_DYNAMIC  # ignored when static_shape is set
    static_shape: tuple[int, int] | None = None  # fixes batch 1 and this H x W
    opt_shape: tuple[int, int] | None = None  # trace size and the card's opt shape; default: training resolution
    min_shape: tuple[int, int] | None = None
    max_shape: tuple[int, int] | None = None
    simplify: bool = True
    check_sizes: tuple[tuple[int, int], ...] | None = None  # parity sizes; default: opt, half of opt, an odd one

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise FcnDeployError(f"unknown --head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.upsample not in UPSAMPLE_MODES:
            raise FcnDeployError(f"unknown --upsample {self.upsample!r}; choose one of {', '.join(UPSAMPLE_MODES)}")
        lo, hi = OPSET_RANGE
        if not lo <= self.opset <= hi:
            raise FcnDeployError(f"--opset {self.opset}: supported range is {lo}..{hi} (default {DEFAULT_OPSET})")
        unknown = [d for d in self.dynamic if d not in DYNAMIC_DIMS]
        if unknown:
            raise FcnDeployError(f"--dynamic: unknown axis {unknown[0]!r}; use a subset of {','.join(DYNAMIC_DIMS)}")
        for what, hw in (("--static", self.static_shape), ("--input-size", self.opt_shape),
                         ("--min-shape", self.min_shape), ("--max-shape", self.max_shape)):  # fmt: skip
            if hw is not None and (hw[0] < 1 or hw[1] < 1):
                raise FcnDeployError(f"{what} {format_hw(hw)}: height and width must be positive")
