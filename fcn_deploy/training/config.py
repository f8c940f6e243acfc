"""Typed, frozen model configuration (torch-free, so the CLI and model card can use it)."""

from __future__ import annotations

from dataclasses import dataclass

from fcn_deploy.core.errors import FcnDeployError

VARIANTS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")
PADDINGS = ("paper", "same")


@dataclass(frozen=True)
class ModelConfig:
    """One FCN build. `paper` is exact to Long et al.; `same` drops the 100-pixel input pad for edge devices."""

    variant: str = "fcn8s"
    num_classes: int = 21
    width: float = 1.0  # multiplier on every trunk channel count (0.125 makes CPU tests fast)
    padding: str = "paper"
    batch_norm: bool = False
    learn_upsampling: bool = False  # the reference keeps the bilinear kernels fixed

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise FcnDeployError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.padding not in PADDINGS:
            raise FcnDeployError(f"unknown padding {self.padding!r}; choose paper or same")
        if self.num_classes < 1:
            raise FcnDeployError(f"--num-classes must be >= 1, got {self.num_classes}")
        if not 0 < self.width <= 4:
            raise FcnDeployError(f"--width must be in (0, 4], got {self.width}")

    def channels(self, base: int) -> int:
        return max(1, int(round(base * self.width)))
