"""The dataset base class and the mask reading every on-disk dataset shares (torch-free: numpy + PIL).

A dataset item is `(image, labels)`: an HxWx3 uint8 RGB image and an HxW integer label map whose unlabelled
pixels hold `ignore_index`. Masks are checked when they are loaded (size and values), so a bad file fails with a
one-line FcnDeployError naming it instead of silently training on garbage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.images import error_reason, read_image


class SegmentationDataset:
    """Indexable (image, labels) pairs plus the class names, palette and ignore label that go into the card."""

    name: str = ""
    mask_values: str = ""  # what a raw mask may hold, for error messages; default: classes + ignore label

    def __init__(
        self,
        split: str,
        root: str | None,
        class_names: Sequence[str],
        palette: Sequence[Sequence[int]],
        ignore_index: int = 255,
    ) -> None:
        if len(palette) != len(class_names):
            raise FcnDeployError(
                f"dataset '{self.name}': {len(class_names)} class names but {len(palette)} palette colours; "
                "give one colour per class"
            )
        self.split = split
        self.root = root
        self.class_names = tuple(str(c) for c in class_names)
        self.palette = tuple((int(r), int(g), int(b)) for r, g, b in palette)
        self.ignore_index = int(ignore_index)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_masks(self) -> bool:
        """False for image-only folders: their label maps are all `ignore_index`."""
        return True

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def image(self, i: int) -> np.ndarray:
        """Only the image of item i (calibration and inference need no masks)."""
        return self[i][0]

    def image_id(self, i: int) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, root={self.root!r}, len={len(self)})"


class FileDataset(SegmentationDataset):
    """A list of (image file, mask file or None) pairs; subclasses say how raw mask values map to labels.

    `label_map` is a 256-entry lookup from raw 8-bit mask values to labels, -1 marking values that are
    neither a class nor an ignore value (the file is rejected). Masks wider than 8 bits are checked directly.
    """

    def __init__(
        self,
        split: str,
        root: str | None,
        pairs: Sequence[tuple[Path, Path | None]],
        class_names: Sequence[str],
        palette: Sequence[Sequence[int]],
        ignore_index: int = 255,
        label_map: np.ndarray | None = None,
    ) -> None:
        super().__init__(split, root, class_names, palette, ignore_index)
        self.pairs = list(pairs)
        self.label_map = (
            identity_label_map(len(self.class_names), self.ignore_index) if label_map is None else label_map
        )

    @property
    def has_masks(self) -> bool:
        return all(mask is not None for _, mask in self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def image_id(self, i: int) -> str:
        return str(self.pairs[i][0])

    def image(self, i: int) -> np.ndarray:
        return read_image(self.pairs[i][0])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[i]
        image = read_image(image_path)
        if mask_path is None:
            return image, np.full(image.shape[:2], self.ignore_index, _label_dtype(self.ignore_index))
        labels = self.decode_mask(mask_path)
        if labels.shape != image.shape[:2]:
            raise FcnDeployError(
                f"mask {mask_path} is {labels.shape[1]}x{labels.shape[0]} but its image {image_path} is "
                f"{image.shape[1]}x{image.shape[0]} (WxH); resize the mask with nearest-neighbour or fix the pairing"
            )
        return image, labels

    def decode_mask(self, path: Path) -> np.ndarray:
        """Read a label PNG and map raw values to labels, rejecting values that are neither class nor ignore."""
        raw = read_label_image(path)
        if raw.dtype == np.uint8:
            labels = self.label_map[raw]
            if (labels < 0).any():
                bad = np.unique(raw[labels < 0])
                raise FcnDeployError(self._bad_values_message(path, bad))
            return labels.astype(_label_dtype(self.ignore_index))
        valid = ((raw >= 0) & (raw < self.num_classes)) | (raw == self.ignore_index)
        if not valid.all():
            raise FcnDeployError(self._bad_values_message(path, np.unique(raw[~valid])))
        return raw.astype(np.int32)

    def _bad_values_message(self, path: Path, bad: np.ndarray) -> str:
        shown = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        allowed = (
            self.mask_values
            or f"a class (0..{self.num_classes - 1}) nor the ignore label {self.ignore_index}"
        )
        return (
            f"mask {path} holds value(s) {shown} that are neither {allowed}; "
            f"fix the mask or the class list of dataset '{self.name}'"
        )


def identity_label_map(num_classes: int, ignore_index: int) -> np.ndarray:
    """Raw value == label for 0..num_classes-1 and for the ignore value; everything else invalid (-1)."""
    lut = np.full(256, -1, np.int32)
    lut[: min(num_classes, 256)] = np.arange(min(num_classes, 256))
    if 0 <= ignore_index < 256:
        lut[ignore_index] = ignore_index
    return lut


def _label_dtype(ignore_index: int) -> type:
    return np.uint8 if 0 <= ignore_index < 256 else np.int32


def read_label_image(path: Path) -> np.ndarray:
    """A single-channel label PNG (palette PNGs are read as their indices, not colours) -> HxW int array."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
                array = np.asarray(im)
            else:
                array = None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise FcnDeployError(
            f"cannot read mask {path} ({error_reason(exc)}); replace or remove the file"
        ) from None
    if array is None:
        raise FcnDeployError(
            f"mask {path} is a {mode} image; label masks must be single-channel PNGs holding class indices "
            "(grayscale or palette), convert it before training"
        )
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return array


def require_dir(path: Path, what: str, fix: str) -> Path:
    if not path.is_dir():
        raise FcnDeployError(f"{what} {path} does not exist; {fix}")
    return path


def require_root(root: str | None, dataset: str, expected: str) -> Path:
    """The data root must be given and be a directory."""
    if root is None:
        raise FcnDeployError(
            f"dataset '{dataset}' needs a data root; pass --data-root pointing at {expected}"
        )
    return require_dir(Path(root), "data root", f"pass --data-root pointing at {expected}")


def require_nonempty(pairs: Sequence, where: Path | str, split: str, dataset: str) -> None:
    if not pairs:
        raise FcnDeployError(
            f"no images for split '{split}' of dataset '{dataset}' in {where}; check --data-root and --split"
        )
