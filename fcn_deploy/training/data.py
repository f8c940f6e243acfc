"""Datasets as torch batches: resize, augmentation and the one normalisation per item, seeded for exact resume.

Every random draw is a pure function of (seed, epoch, item): the shuffle order comes from a generator seeded per
epoch and each item's augmentation has its own numpy generator, so workers and a --resume replay it exactly.
"""

from __future__ import annotations

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


def epoch_loader(train_set: TrainSet, epoch: int, workers: int, pin_memory: bool) -> DataLoader:
    """The batches of `epoch`, in the order an uninterrupted run draws them."""
    cfg = train_set.cfg
    train_set.epoch = epoch
    shuffle = torch.Generator().manual_seed(cfg.seed * 100_019 + epoch)
    return DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=shuffle,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
    )
