"""HxW size strings every command takes, and the one shape range (min / opt / max) with its defaults."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

from fcn_deploy.core.errors import FcnDeployError


def parse_hw(text: str, what: str = "size") -> tuple[int, int]:
    """'360x480' -> (360, 480). Both sides must be positive integers."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        h, w = int(parts[0]), int(parts[1])
    except ValueError:
        raise FcnDeployError(f"{what} {text!r}: expected HEIGHTxWIDTH, e.g. 360x480") from None
    if h <= 0 or w <= 0:
        raise FcnDeployError(f"{what} {text!r}: height and width must be positive, e.g. 360x480")
    return h, w


def parse_hw_list(text: str, what: str = "sizes") -> list[tuple[int, int]]:
    """'360x480,180x240' -> [(360, 480), (180, 240)]."""
    items = [s for s in str(text).split(",") if s.strip()]
    if not items:
        raise FcnDeployError(f"{what} {text!r}: give at least one HEIGHTxWIDTH")
    return [parse_hw(s.strip(), what) for s in items]


def format_hw(hw: tuple[int, int] | list[int]) -> str:
    return f"{hw[0]}x{hw[1]}"


HW = tuple[int, int]
# The network's output stride: pool5 has ceil(H / 32) x ceil(W / 32) cells.
STRIDE = 32


def round_up(hw: Sequence[int], multiple: int = STRIDE) -> HW:
    return multiple * math.ceil(hw[0] / multiple), multiple * math.ceil(hw[1] / multiple)


@dataclass(frozen=True)
class ShapeRange:
    """The min / opt / max HxW a model is recommended for (model card, exporter, TensorRT profile, backends)."""

    min_hw: HW
    opt_hw: HW
    max_hw: HW

    def __post_init__(self) -> None:
        sizes = (self.min_hw, self.opt_hw, self.max_hw)
        try:
            sizes = tuple((operator.index(h), operator.index(w)) for h, w in sizes)  # type: ignore[misc]
        except (TypeError, ValueError):
            raise FcnDeployError(f"shapes {sizes}: each must be two integers HEIGHTxWIDTH") from None
        if any(v < 1 for hw in sizes for v in hw):
            raise FcnDeployError(f"shapes {sizes}: height and width must be positive")
        for name, hw in zip(("min_hw", "opt_hw", "max_hw"), sizes, strict=True):
            object.__setattr__(self, name, hw)  # plain int tuples, whatever sequence came in
        for axis, axis_name in ((0, "height"), (1, "width")):
            lo, mid, hi = (hw[axis] for hw in sizes)
            if not lo <= mid <= hi:
                raise FcnDeployError(
                    f"{axis_name}s min {lo}, opt {mid}, max {hi}: need min <= opt <= max (got min "
                    f"{format_hw(sizes[0])}, opt {format_hw(sizes[1])}, max {format_hw(sizes[2])})"
                )

    @property
    def fixed(self) -> HW | None:
        """The one size a static model takes, else None."""
        return self.min_hw if self.min_hw == self.max_hw else None

    def contains(self, hw: Sequence[int]) -> bool:
        return all(lo <= int(x) <= hi for lo, x, hi in zip(self.min_hw, hw, self.max_hw, strict=True))

    def check(self, hw: Sequence[int], source: str) -> None:
        """A clear error instead of a runtime failure for a size outside the range."""
        if not self.contains(hw):
            raise FcnDeployError(
                f"{source}: input {format_hw(tuple(hw))} is outside the model's range {format_hw(self.min_hw)} .. "
                f"{format_hw(self.max_hw)}; resize the input (--input-size) or rebuild/re-export for that size"
            )

    def around(self, opt: Sequence[int]) -> ShapeRange:
        """This range with `opt` as its optimum, widened to contain it (the max rounded up to the stride)."""
        opt_hw = ShapeRange(opt, opt, opt).opt_hw  # type: ignore[arg-type]  # validates opt
        hi = round_up(opt_hw)
        return ShapeRange(
            (min(self.min_hw[0], opt_hw[0]), min(self.min_hw[1], opt_hw[1])),
            opt_hw,
            (max(self.max_hw[0], hi[0]), max(self.max_hw[1], hi[1])),
        )

    def describe(self) -> str:
        return f"min {format_hw(self.min_hw)}, opt {format_hw(self.opt_hw)}, max {format_hw(self.max_hw)}"


# The one set of defaults. FCN takes any HxW (its crops read sizes at run time); the max is 1080p with the height
# rounded up to the stride, 1088 = 34 x 32, so a 1080p frame padded to a multiple of 32 (as stride-aligned
# pipelines pad it) still fits, and with `same` padding 1080 and 1088 rows give the same 34 cells at pool5.
DEFAULT_SHAPES = ShapeRange(min_hw=(32, 32), opt_hw=(360, 480), max_hw=(1088, 1920))  # opt: CamVid's resolution
