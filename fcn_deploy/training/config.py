"""The train config: everything that determines a training run (torch-free: the CLI imports its defaults).

It is stored flat in every checkpoint (`train_config`) and --resume rebuilds it from there; checkpoints written
before a field existed load with that field's default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from fcn_deploy.core.card import Normalization
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.model_config import ModelConfig
from fcn_deploy.training.recipes import (
    DEFAULT_REDUCTION,
    DEFAULT_SCHEDULE,
    OPTIMIZERS,
    REDUCTIONS,
    SCHEDULES,
    SGD_MOMENTUM,
    default_lr,
    default_weight_decay,
)

_ARCH = ModelConfig()
# Training defaults to the edge-friendly geometry (2.35x fewer multiply-adds at 360x480, fcn.md 1.3) while the
# architecture's own default stays the paper's; `--padding paper` trains the exact reference network.
TRAIN_PADDING = "same"


@dataclass(frozen=True)
class TrainConfig:
    """The model's architecture fields take ModelConfig's defaults (the classes come from the dataset)."""

    variant: str = _ARCH.variant
    width: float = _ARCH.width
    padding: str = TRAIN_PADDING
    batch_norm: bool = _ARCH.batch_norm
    dataset: str = "synthetic"
    data_root: str | None = None
    dataset_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    epochs: int = 200
    batch_size: int = 8
    crop: tuple[int, int] | None = None  # training crop; None = whole (resized) images
    resize: tuple[int, int] | None = None  # network resolution for training and validation; None = native
    scale_range: tuple[float, float] = (1.0, 1.0)
    hflip: bool = True
    optimizer: str = "adamw"
    lr: float | None = None  # None = the optimiser's default (fcn_deploy.training.recipes.default_lr)
    weight_decay: float | None = None  # None = the optimiser's default
    momentum: float = SGD_MOMENTUM
    schedule: str | None = None  # None = the optimiser's (recipes.DEFAULT_SCHEDULE); stored resolved
    loss_reduction: str | None = None  # None = the optimiser's (recipes.DEFAULT_REDUCTION); stored resolved
    accumulate: int = 1
    normalization: str = "imagenet"
    backbone_weights: str | None = None
    init_from: str | None = None
    seed: int = 1337
    val_every: int = 1
    amp: bool = True  # mixed precision; only ever used on CUDA

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise FcnDeployError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.schedule is None:
            object.__setattr__(self, "schedule", DEFAULT_SCHEDULE[self.optimizer])
        if self.loss_reduction is None:
            object.__setattr__(self, "loss_reduction", DEFAULT_REDUCTION[self.optimizer])
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.accumulate >= 1, f"--accumulate must be >= 1, got {self.accumulate}"),
            (self.val_every >= 1, f"--val-every must be >= 1, got {self.val_every}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
            (self.loss_reduction in REDUCTIONS, f"--loss-reduction must be one of {', '.join(REDUCTIONS)}"),
            (
                0 < self.scale_range[0] <= self.scale_range[1],
                f"--scale-range {self.scale_range}: need 0 < LO <= HI",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise FcnDeployError(message)
        Normalization.preset(self.normalization)  # one-line error for an unknown name
        self.model_config(1)  # one-line error for an unknown variant / padding / width

    def model_config(self, num_classes: int) -> ModelConfig:
        """The architecture this run trains, for a dataset of `num_classes`."""
        return ModelConfig(self.variant, num_classes, self.width, self.padding, self.batch_norm)

    @property
    def resolved_lr(self) -> float:
        return (
            self.lr if self.lr is not None else default_lr(self.optimizer, self.variant, self.loss_reduction)
        )

    @property
    def resolved_weight_decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else default_weight_decay(self.optimizer)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "checkpoint") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            kw = {k: v for k, v in d.items() if k in known}
            for key in ("crop", "resize", "scale_range"):
                if kw.get(key) is not None:
                    kw[key] = tuple(kw[key])
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise FcnDeployError(
                f"{source}: malformed train_config ({e}); start a new run without --resume"
            ) from None


DEFAULTS = TrainConfig()
