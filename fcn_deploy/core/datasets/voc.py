"""PASCAL VOC 2012 segmentation: VOCdevkit/VOC2012 with JPEGImages, SegmentationClass and ImageSets lists."""

from __future__ import annotations

from pathlib import Path

from fcn_deploy.core.card import voc_palette
from fcn_deploy.core.datasets.base import FileDataset, require_dir, require_nonempty, require_root
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.paths import read_user_text

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


class VOCSegmentation(FileDataset):
    """21 classes, palette PNG masks read as indices, 255 (the object borders) = ignore."""

    name = "voc"

    def __init__(self, root: str | None, split: str = "train") -> None:
        base = require_root(root, self.name, "VOCdevkit/VOC2012")
        lists = base / "ImageSets" / "Segmentation"
        list_file = lists / f"{split}.txt"
        if not list_file.is_file():
            known = sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
            raise FcnDeployError(
                f"split list {list_file} does not exist; use --split {' or '.join(known) or 'train/val'} "
                "or point --data-root at VOCdevkit/VOC2012"
            )
        images = require_dir(base / "JPEGImages", "image folder", "point --data-root at VOCdevkit/VOC2012")
        masks = require_dir(
            base / "SegmentationClass", "mask folder", "point --data-root at VOCdevkit/VOC2012"
        )
        names = [line.split()[0] for line in read_user_text(list_file, "split list").splitlines() if line.strip()]
        pairs = [(images / f"{n}.jpg", masks / f"{n}.png") for n in names]
        require_nonempty(pairs, list_file, split, self.name)
        for image, mask in pairs:
            _require_file(image, list_file)
            _require_file(mask, list_file)
        super().__init__(split, str(base), pairs, VOC_CLASSES, voc_palette(len(VOC_CLASSES)), 255)


def _require_file(path: Path, listed_in: Path) -> None:
    if not path.is_file():
        raise FcnDeployError(
            f"{path} is listed in {listed_in} but missing; restore it or remove it from the list"
        )
