"""Your own data: images/ and masks/ matched by file stem, classes from classes.txt or classes.json.

Layouts (the first that exists wins):
  root/{split}/images/*  + root/{split}/masks/*       one folder per split
  root/images/*          + root/masks/*               with root/{split}.txt listing the stems of the split,
                                                      or, without that list, every image in every split
Classes: root/classes.txt (one name per line) or root/classes.json (a list of names, or
{"classes": [...], "palette": [[r, g, b], ...], "ignore_index": 255}); the `class_names` / `palette` /
`ignore_index` options override the files. Masks are single-channel index PNGs; RGB colour masks are accepted
when a palette is given explicitly (each colour is mapped to its class, colours outside the palette are errors).
Without a masks/ folder the dataset is image-only (has_masks False: usable for calibration and inference).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fcn_deploy.core.card import voc_palette
from fcn_deploy.core.datasets.base import FileDataset, require_nonempty, require_root
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.images import error_reason, list_images
from fcn_deploy.core.paths import read_user_text


def read_classes(root: Path) -> tuple[list[str] | None, list | None, int | None]:
    """(class names, palette, ignore_index) from root/classes.json or root/classes.txt; None where absent."""
    json_path, txt_path = root / "classes.json", root / "classes.txt"
    if json_path.is_file():
        try:
            data = json.loads(read_user_text(json_path, "class list"))
        except ValueError as exc:
            raise FcnDeployError(
                f"cannot parse {json_path} ({error_reason(exc)}); write valid JSON"
            ) from None
        if isinstance(data, list):
            data = {"classes": data}
        names = data.get("classes") if isinstance(data, dict) else None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise FcnDeployError(
                f'{json_path} must hold a list of class names or {{"classes": [...], "palette": [...]}}'
            )
        return names, data.get("palette"), data.get("ignore_index")
    if txt_path.is_file():
        names = [line.strip() for line in read_user_text(txt_path, "class list").splitlines() if line.strip()]
        if not names:
            raise FcnDeployError(f"{txt_path} is empty; write one class name per line")
        return names, None, None
    return None, None, None


def _check_palette(palette: object, num_classes: int, source: str) -> tuple[tuple[int, int, int], ...]:
    ok = (
        isinstance(palette, (list, tuple))
        and len(palette) == num_classes
        and all(
            isinstance(c, (list, tuple))
            and len(c) == 3
            and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in palette
        )
    )
    if not ok:
        raise FcnDeployError(
            f"palette in {source} must list {num_classes} [r, g, b] colours (0-255), one per class"
        )
    return tuple(tuple(c) for c in palette)


class FolderSegmentation(FileDataset):
    name = "folder"

    def __init__(
        self,
        root: str | None,
        split: str = "train",
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        base = require_root(root, self.name, "a folder holding images/ (and masks/) plus classes.txt")
        file_names, file_palette, file_ignore = read_classes(base)
        names = list(class_names) if class_names is not None else file_names
        if not names:
            raise FcnDeployError(
                f"no class list for {base}; write {base / 'classes.txt'} (one class name per line) or classes.json"
            )
        explicit = palette if palette is not None else file_palette
        colours = (
            _check_palette(explicit, len(names), str(base))
            if explicit is not None
            else voc_palette(len(names))
        )
        ignore = (
            ignore_index if ignore_index is not None else (file_ignore if file_ignore is not None else 255)
        )
        if not isinstance(ignore, int) or 0 <= ignore < len(names):
            raise FcnDeployError(
                f"ignore_index {ignore!r} for {base} must be an integer outside the class indices "
                f"0..{len(names) - 1}; use 255"
            )
        self.colour_masks = explicit is not None
        pairs, where = self._pairs(base, split)
        require_nonempty(pairs, where, split, self.name)
        super().__init__(split, str(base), pairs, names, colours, ignore)

    @staticmethod
    def _pairs(base: Path, split: str) -> tuple[list[tuple[Path, Path | None]], Path]:
        folder = base / split if (base / split / "images").is_dir() else base
        images_dir = folder / "images"
        if not images_dir.is_dir():
            raise FcnDeployError(
                f"image folder {images_dir} does not exist; put the images in {base / 'images'}"
            )
        images = list_images(images_dir)
        by_stem = _by_stem(images)
        split_list = base / f"{split}.txt"
        if folder == base and split_list.is_file():
            wanted = [line.strip() for line in read_user_text(split_list, "split list").splitlines() if line.strip()]
            missing = [s for s in wanted if s not in by_stem]
            if missing:
                raise FcnDeployError(
                    f"{split_list} lists '{missing[0]}' but {images_dir} has no such image; fix the list"
                )
            images = [by_stem[s] for s in wanted]
        masks_dir = folder / "masks"
        if not masks_dir.is_dir():
            return [(p, None) for p in images], images_dir
        masks = _by_stem(list_images(masks_dir))
        pairs = []
        for image in images:
            if image.stem not in masks:
                raise FcnDeployError(
                    f"image {image} has no mask named {image.stem}.png in {masks_dir}; add it or remove the image"
                )
            pairs.append((image, masks[image.stem]))
        return pairs, images_dir

    def decode_mask(self, path: Path) -> np.ndarray:
        if self.colour_masks and _is_colour(path):
            return self._decode_colour_mask(path)
        return super().decode_mask(path)

    def _decode_colour_mask(self, path: Path) -> np.ndarray:
        """RGB mask -> class indices through the palette; a colour outside the palette is an error."""
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB")).astype(np.int32)
        except (OSError, ValueError, SyntaxError) as exc:
            raise FcnDeployError(
                f"cannot read mask {path} ({error_reason(exc)}); replace or remove the file"
            ) from None
        codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        palette_codes = np.array([(r << 16) | (g << 8) | b for r, g, b in self.palette], np.int32)
        order = np.argsort(palette_codes)
        pos = np.searchsorted(palette_codes[order], codes).clip(0, len(order) - 1)
        found = palette_codes[order][pos] == codes
        if not found.all():
            r, g, b = rgb[~found][0]
            raise FcnDeployError(
                f"mask {path} has colour ({r}, {g}, {b}) that is not in the palette of {self.root}; "
                "add it to the palette or recolour the mask"
            )
        return order[pos].astype(np.uint8 if self.num_classes <= 256 else np.int32)


def _by_stem(paths: list[Path]) -> dict[str, Path]:
    """Files by stem; two files with one stem (a.jpg and a.png) would make the pairing ambiguous."""
    out: dict[str, Path] = {}
    for p in paths:
        if p.stem in out:
            raise FcnDeployError(f"{out[p.stem]} and {p} share the name '{p.stem}'; keep one of them")
        out[p.stem] = p
    return out


def _is_colour(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            return im.mode in ("RGB", "RGBA")
    except (OSError, ValueError, SyntaxError) as exc:
        raise FcnDeployError(
            f"cannot read mask {path} ({error_reason(exc)}); replace or remove the file"
        ) from None
