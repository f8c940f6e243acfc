"""Segmentation datasets by name (torch-free). `build_dataset("camvid", root, "val")` -> SegmentationDataset.

Every dataset yields (HxWx3 uint8 RGB image, HxW integer labels) with unlabelled pixels = `ignore_index`
(255 for all built-in datasets) and carries the class names and palette that go into the model card.
"""

from __future__ import annotations

import inspect

from fcn_deploy.core.datasets.base import SegmentationDataset
from fcn_deploy.core.datasets.camvid import CamVidSegmentation
from fcn_deploy.core.datasets.cityscapes import CityscapesSegmentation
from fcn_deploy.core.datasets.folder import FolderSegmentation
from fcn_deploy.core.datasets.synthetic import SyntheticShapes
from fcn_deploy.core.datasets.voc import VOCSegmentation
from fcn_deploy.core.errors import FcnDeployError

_CLASSES: dict[str, type[SegmentationDataset]] = {
    "voc": VOCSegmentation,
    "cityscapes": CityscapesSegmentation,
    "camvid": CamVidSegmentation,
    "folder": FolderSegmentation,
    "synthetic": SyntheticShapes,
}
DATASETS = tuple(_CLASSES)


def build_dataset(name: str, root: str | None = None, split: str = "train", **options) -> SegmentationDataset:
    """The dataset `name` at `root` (ignored by `synthetic`) for `split`; options are dataset-specific."""
    if name not in _CLASSES:
        raise FcnDeployError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    cls = _CLASSES[name]
    try:
        inspect.signature(cls).bind(root, split, **options)
    except TypeError:
        accepted = [p for p in inspect.signature(cls).parameters if p not in ("root", "split")]
        unknown = ", ".join(sorted(set(options) - set(accepted)))
        raise FcnDeployError(
            f"dataset '{name}' has no option(s) {unknown}; it accepts {', '.join(accepted) or 'none'}"
        ) from None
    return cls(root, split, **options)


def describe(ds: SegmentationDataset) -> dict:
    """A JSON-ready summary (for logs and the model card's provenance)."""
    return {
        "name": ds.name,
        "split": ds.split,
        "root": ds.root,
        "len": len(ds),
        "num_classes": ds.num_classes,
        "class_names": list(ds.class_names),
        "ignore_index": ds.ignore_index,
        "has_masks": ds.has_masks,
    }


__all__ = ["DATASETS", "SegmentationDataset", "build_dataset", "describe"]
