"""The model configuration: the architecture fields of one FCN build, defined once (torch-free).

The model card extends it (fcn_deploy.core.card.ModelCard), the trainer builds one per run and checkpoints store it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

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
            raise FcnDeployError(f"unknown padding {self.padding!r}; choose one of {', '.join(PADDINGS)}")
        if self.num_classes < 1:
            raise FcnDeployError(f"--num-classes must be >= 1, got {self.num_classes}")
        if not 0 < self.width <= 4:
            raise FcnDeployError(f"--width must be in (0, 4], got {self.width}")

    def channels(self, base: int) -> int:
        return max(1, int(round(base * self.width)))

    @classmethod
    def from_fields(cls, d: dict[str, Any]) -> ModelConfig:
        """The config held in `d` (a checkpoint's model_config, a card, a train config); other keys are ignored."""
        return cls(**{k: v for k, v in d.items() if k in MODEL_FIELDS})


MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def stored_value_problem(e: FcnDeployError) -> str:
    """ModelConfig's complaint about a value read from a file, not typed as an option: '--width must be in (0, 4],
    got 9.0' becomes 'an invalid width (must be in (0, 4], got 9.0)'."""
    text = str(e)
    if not text.startswith("--"):
        return text
    name, _, rest = text[2:].partition(" ")
    return f"an invalid {name} ({rest})"
