"""Datasets as torch batches: resize, augmentation and the one normalisation per item, seeded for exact resume.

Every random draw is a pure function of (seed, epoch, item): the shuffle order comes from a generator seeded per
epoch and each item's augmentation has its own numpy generator, so workers and a --resume replay it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fcn_deploy.core.card import Normalization
from fcn_deploy.core.datasets import SegmentationDataset
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.preprocess import normalize, resize_image, resize_labels, to_rgb
from fcn_deploy.training.config import TrainConfig
from fcn_deploy.training.transforms import TrainTransform


class TrainSet(Dataset):
    """A numpy dataset as torch tensors: optional resize, augmentation, then the one normalisation."""

    def __init__(self, ds: SegmentationDataset, cfg: TrainConfig, norm: Normalization) -> None:
        self.ds, self.cfg, self.norm = ds, cfg, norm
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = self.ds[i]
        image = to_rgb(image)
        if self.cfg.resize is not None:
            image, labels = resize_image(image, self.cfg.resize), resize_labels(labels, self.cfg.resize)
        crop = self.cfg.crop or image.shape[:2]
        transform = TrainTransform(tuple(crop), self.cfg.scale_range, self.cfg.hflip, self.ds.ignore_index)
        rng = np.random.default_rng([self.cfg.seed, self.epoch, i])
        image, labels = transform(image, labels, rng)
        x = torch.from_numpy(normalize(image, self.norm))
        return x, torch.from_numpy(labels.astype(np.int64))


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {tuple(x.shape) for x, _ in batch}
    if len(shapes) > 1:
        raise FcnDeployError(
            f"training images of different sizes {sorted(shapes)} in one batch; pass --crop HxW (or --resize HxW), "
            "or --batch-size 1"
        )
    return torch.stack([x for x, _ in batch]), torch.stack([y for _, y in batch])


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The single-process shuffle of `epoch`: the draw torch's DataLoader(shuffle=True) made from the generator
    seeded per epoch (one 64-bit worker seed first, then the permutation), so runs keep their sample order."""
    generator = torch.Generator().manual_seed(seed * 100_019 + epoch)
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    return torch.randperm(n, generator=generator).tolist()


@dataclass(frozen=True)
class RankBatch:
    """This rank's share of one global batch. `items` are dataset indices; `real` is False for the stand-in
    item a rank scores with zero weight when the last global batch is smaller than the world (DDP needs every
    rank to take each step). `global_size`: the images in the whole global batch."""

    items: list[int]
    real: bool
    global_size: int


def rank_batches(order: list[int], batch_size: int, rank: int = 0, world: int = 1) -> list[RankBatch]:
    """Global batches of `batch_size` taken from `order` in turn (the last may be short); rank r gets the r-th
    contiguous slice of batch_size / world items of each, so K processes see the sample order of one."""
    if batch_size % world:
        raise FcnDeployError(f"--batch-size {batch_size} does not divide among {world} processes")
    per = batch_size // world
    out = []
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        mine = batch[rank * per : (rank + 1) * per]
        out.append(RankBatch(mine or batch[:1], bool(mine), len(batch)))
    return out


def sample_seed(seed: int, epoch: int, item: int) -> int:
    """The seed of one item's random draws beyond augmentation (dropout masks), the same in any process."""
    return int(np.random.SeedSequence([seed, epoch, item, 0xD]).generate_state(1, np.uint64)[0] >> 1)


def epoch_loader(
    train_set: TrainSet, epoch: int, workers: int, pin_memory: bool, rank: int = 0, world: int = 1
) -> tuple[DataLoader, list[RankBatch]]:
    """This rank's batches of `epoch`, in the order an uninterrupted run draws them, and what each holds."""
    cfg = train_set.cfg
    train_set.epoch = epoch
    batches = rank_batches(epoch_order(cfg.seed, epoch, len(train_set)), cfg.batch_size, rank, world)
    loader = DataLoader(
        train_set,
        batch_sampler=[b.items for b in batches],
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
    )
    return loader, batches
