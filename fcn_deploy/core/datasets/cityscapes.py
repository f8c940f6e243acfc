"""Cityscapes fine annotations: leftImg8bit/{split}/{city}/*_leftImg8bit.png + gtFine *_labelIds.png -> 19 train ids."""

from __future__ import annotations

import numpy as np

from fcn_deploy.core.datasets.base import FileDataset, require_dir, require_nonempty, require_root
from fcn_deploy.core.errors import FcnDeployError

# (name, labelId, colour) for trainIds 0..18, from the official cityscapesScripts labels.py.
_TRAIN_LABELS = (
    ("road", 7, (128, 64, 128)), ("sidewalk", 8, (244, 35, 232)), ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)), ("fence", 13, (190, 153, 153)), ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)), ("traffic sign", 20, (220, 220, 0)), ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)), ("sky", 23, (70, 130, 180)), ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)), ("car", 26, (0, 0, 142)), ("truck", 27, (0, 0, 70)), ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)), ("motorcycle", 32, (0, 0, 230)), ("bicycle", 33, (119, 11, 32)),
)  # fmt: skip
CITYSCAPES_CLASSES = tuple(name for name, _, _ in _TRAIN_LABELS)
CITYSCAPES_PALETTE = tuple(colour for _, _, colour in _TRAIN_LABELS)
NUM_LABEL_IDS = 34  # labelIds 0..33; license plate (-1) is stored as 255


def label_id_to_train_id() -> np.ndarray:
    """256-entry lookup: the 19 evaluated labelIds -> trainIds, other labelIds and 255 -> 255, rest invalid."""
    lut = np.full(256, -1, np.int32)
    lut[:NUM_LABEL_IDS] = 255
    lut[255] = 255
    for train_id, (_, label_id, _) in enumerate(_TRAIN_LABELS):
        lut[label_id] = train_id
    return lut


class CityscapesSegmentation(FileDataset):
    """19 train classes; every other labelId becomes the ignore label 255."""

    name = "cityscapes"
    mask_values = f"a Cityscapes labelId (0..{NUM_LABEL_IDS - 1}) nor 255"

    def __init__(self, root: str | None, split: str = "train") -> None:
        base = require_root(root, self.name, "the Cityscapes folder holding leftImg8bit/ and gtFine/")
        fix = "use --split train, val or test and point --data-root at the folder holding leftImg8bit/ and gtFine/"
        images = require_dir(base / "leftImg8bit" / split, "image folder", fix)
        masks = require_dir(base / "gtFine" / split, "annotation folder", fix)
        pairs = []
        for image in sorted(images.glob("*/*_leftImg8bit.png")):
            stem = image.name[: -len("_leftImg8bit.png")]
            mask = masks / image.parent.name / f"{stem}_gtFine_labelIds.png"
            if not mask.is_file():
                raise FcnDeployError(
                    f"image {image} has no annotation {mask}; restore gtFine/{split} or remove the image"
                )
            pairs.append((image, mask))
        require_nonempty(pairs, images, split, self.name)
        super().__init__(
            split,
            str(base),
            pairs,
            CITYSCAPES_CLASSES,
            CITYSCAPES_PALETTE,
            255,
            label_map=label_id_to_train_id(),
        )
