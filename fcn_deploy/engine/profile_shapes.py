"""The optimisation profile (min/opt/max input shapes) and the size strings build-engine takes.

Pure CPU code: every shape is checked here before TensorRT or a GPU is touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.shapes import HW, ShapeRange, format_hw, parse_hw

# FCN accepts every H and W (paper padding pads conv1_1 by 100; "same" padding uses ceil-mode pools; the crops
# read the size at run time), so the only size rule is the one an exported graph fixes: a static input axis.
FCN_SIZE_MULTIPLE = 1
CHANNELS = 3

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

Triple = tuple[int, int, int]


def parse_workspace(text: str) -> int:
    """'2G' / '512M' / '1.5GiB' / '1073741824' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise FcnDeployError(f"--workspace {text!r}: expected a size such as 2G, 512M or 1073741824 (bytes)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value < 1024**2:
        raise FcnDeployError(f"--workspace {text!r}: {value} bytes is too small; give at least 1M (e.g. 2G)")
    return value


def parse_batch(text: str) -> Triple:
    """'1:4:8' -> (1, 4, 8); '4' -> (4, 4, 4). min <= opt <= max, all >= 1."""
    parts = str(text).split(":")
    try:
        if len(parts) == 1:
            values = (int(parts[0]),) * 3
        elif len(parts) == 3:
            values = tuple(int(p) for p in parts)
        else:
            raise ValueError
    except ValueError:
        raise FcnDeployError(f"--batch {text!r}: expected MIN:OPT:MAX (e.g. 1:4:8) or one number") from None
    b_min, b_opt, b_max = values
    if b_min < 1:
        raise FcnDeployError(f"--batch {text!r}: batch sizes must be >= 1")
    if not b_min <= b_opt <= b_max:
        raise FcnDeployError(f"--batch {text!r}: need MIN <= OPT <= MAX")
    return b_min, b_opt, b_max


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimisation profile for the image input (NCHW, 3 channels)."""

    input_name: str
    batch: Triple
    min_hw: HW
    opt_hw: HW
    max_hw: HW

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) as NCHW tuples, as `IOptimizationProfile.set_shape` wants them."""
        return tuple(  # type: ignore[return-value]
            (b, CHANNELS, hw[0], hw[1])
            for b, hw in zip(self.batch, (self.min_hw, self.opt_hw, self.max_hw), strict=True)
        )

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Per-call check: a batch outside the profile is a clear error, never a TensorRT failure."""
        lo, _, hi = self.shapes()
        if len(shape) != 4 or shape[1] != CHANNELS:
            raise FcnDeployError(f"input batch shape {tuple(shape)}: expected N x {CHANNELS} x H x W (NCHW)")
        if any(not lo[i] <= shape[i] <= hi[i] for i in (0, 2, 3)):
            raise FcnDeployError(
                f"input batch shape {tuple(shape)} is outside the engine's profile (min {lo}, max {hi}); "
                "resize the input into that range or rebuild with `fcn-deploy build-engine --min-shape/--max-shape"
                "/--batch`"
            )

    @property
    def sizes(self) -> ShapeRange:
        return ShapeRange(self.min_hw, self.opt_hw, self.max_hw)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_name": self.input_name,
            "batch": list(self.batch),
            "min_shape": list(self.min_hw),
            "opt_shape": list(self.opt_hw),
            "max_shape": list(self.max_hw),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        return cls(
            str(d["input_name"]),
            tuple(int(x) for x in d["batch"]),  # type: ignore[arg-type]
            tuple(int(x) for x in d["min_shape"]),  # type: ignore[arg-type]
            tuple(int(x) for x in d["opt_shape"]),  # type: ignore[arg-type]
            tuple(int(x) for x in d["max_shape"]),  # type: ignore[arg-type]
        )

    def describe(self) -> str:
        b = self.batch
        return (
            f"{self.input_name}: batch {b[0]}:{b[1]}:{b[2]}, min {format_hw(self.min_hw)}, "
            f"opt {format_hw(self.opt_hw)}, max {format_hw(self.max_hw)}"
        )


def validate(profile: Profile, multiple: int = FCN_SIZE_MULTIPLE) -> Profile:
    """min <= opt <= max per axis, and every side a multiple of what the model accepts."""
    try:
        sizes = profile.sizes  # ShapeRange checks min <= opt <= max per axis
    except FcnDeployError as e:
        raise FcnDeployError(f"profile {e}; adjust --min-shape/--opt-shape/--max-shape") from None
    if multiple > 1:
        for name, hw in zip(("min", "opt", "max"), (sizes.min_hw, sizes.opt_hw, sizes.max_hw), strict=True):
            if hw[0] % multiple or hw[1] % multiple:
                raise FcnDeployError(
                    f"--{name}-shape {format_hw(hw)}: this model needs sides that are multiples of {multiple}"
                )
    return profile


def profile_from_card(
    card: ModelCard,
    min_shape: str | None = None,
    opt_shape: str | None = None,
    max_shape: str | None = None,
    batch: str | None = None,
) -> Profile:
    """Profile defaults are the card's recommended shapes; each --*-shape option overrides one of them."""
    shapes = card.shapes
    prof = Profile(
        input_name=card.input_name,
        batch=parse_batch(batch) if batch else (1, 1, 1),
        min_hw=parse_hw(min_shape, "--min-shape") if min_shape else shapes.min_hw,
        opt_hw=parse_hw(opt_shape, "--opt-shape") if opt_shape else shapes.opt_hw,
        max_hw=parse_hw(max_shape, "--max-shape") if max_shape else shapes.max_hw,
    )
    return validate(prof)


def onnx_input_dims(model: Any, name: str) -> list[int | str | None]:
    """Dims of graph input `name` in an onnx.ModelProto: int when static, the symbol (or None) when dynamic."""
    for inp in model.graph.input:
        if inp.name == name:
            dims = inp.type.tensor_type.shape.dim
            return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    names = [i.name for i in model.graph.input]
    raise FcnDeployError(
        f"ONNX model has no input {name!r} (inputs: {names}); the model card and the graph disagree, re-export it"
    )


def check_against_onnx(profile: Profile, dims: list[int | str | None], source: str) -> None:
    """A static axis in the exported graph pins that axis: every profile shape must equal it."""
    if len(dims) != 4:
        raise FcnDeployError(
            f"{source}: input {profile.input_name!r} has rank {len(dims)}, expected NCHW (rank 4)"
        )
    if isinstance(dims[1], int) and dims[1] != CHANNELS:
        raise FcnDeployError(
            f"{source}: input {profile.input_name!r} has {dims[1]} channels, expected {CHANNELS}"
        )
    flags = {0: "--batch", 2: "--min/--opt/--max-shape height", 3: "--min/--opt/--max-shape width"}
    for axis, shape_values in (
        (0, profile.batch),
        (2, [s[2] for s in profile.shapes()]),
        (3, [s[3] for s in profile.shapes()]),
    ):
        fixed = dims[axis]
        if isinstance(fixed, int) and fixed > 0 and any(v != fixed for v in shape_values):
            raise FcnDeployError(
                f"{source}: input {profile.input_name!r} axis {axis} is fixed at {fixed} in the graph, but "
                f"{flags[axis]} asks for {list(shape_values)}; use {fixed} or re-export with dynamic axes"
            )
