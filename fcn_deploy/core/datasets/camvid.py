"""CamVid (SegNet copy): {split}/NAME.png images with {split}annot/NAME.png label maps, 11 classes + void.

The masks hold 0..10 for the classes and 11 for void. Void is remapped to 255 when loading, so CamVid uses the
same ignore label as every other built-in dataset (the model card's ignore_index is 255).
"""

from __future__ import annotations

import numpy as np

from fcn_deploy.core.datasets.base import FileDataset, require_dir, require_nonempty, require_root
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.images import list_images

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)  # fmt: skip
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
CAMVID_VOID = 11


def camvid_label_map() -> np.ndarray:
    """0..10 stay, void (11) and an already-remapped 255 become 255, anything else is invalid."""
    lut = np.full(256, -1, np.int32)
    lut[: len(CAMVID_CLASSES)] = np.arange(len(CAMVID_CLASSES))
    lut[CAMVID_VOID] = 255
    lut[255] = 255
    return lut


class CamVidSegmentation(FileDataset):
    name = "camvid"
    mask_values = f"a CamVid class (0..{len(CAMVID_CLASSES) - 1}), void ({CAMVID_VOID}) nor 255"

    def __init__(self, root: str | None, split: str = "train") -> None:
        base = require_root(root, self.name, "the CamVid folder holding train/ and trainannot/")
        fix = "use --split train or val (test if present) and point --data-root at the CamVid folder"
        images = require_dir(base / split, "image folder", fix)
        masks = require_dir(base / f"{split}annot", "annotation folder", fix)
        pairs = []
        for image in list_images(images):
            mask = masks / f"{image.stem}.png"
            if not mask.is_file():
                raise FcnDeployError(f"image {image} has no label map {mask}; restore it or remove the image")
            pairs.append((image, mask))
        require_nonempty(pairs, images, split, self.name)
        super().__init__(
            split, str(base), pairs, CAMVID_CLASSES, CAMVID_PALETTE, 255, label_map=camvid_label_map()
        )
