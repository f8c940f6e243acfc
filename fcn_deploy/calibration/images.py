"""Which images calibrate a model, and which are held out to judge it.

A fixed, seeded selection from a folder, a dataset split or a video. When the dataset has masks the selection is
stratified: every class first gets a quota of images that contain it (rarest classes first), then the rest of
the budget is filled in seeded order, so that a 0.3%-of-pixels class is still seen by the calibrator. Corrupt
images are skipped and counted. Images are re-read when iterated: nothing holds the whole set in memory.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.images import IMAGE_EXTENSIONS, list_images, read_image
from fcn_deploy.runtime.opencv import bgr_to_rgb, import_cv2

log = logging.getLogger(__name__)

OTHER_SPLIT = {"train": "val", "val": "train", "test": "val", "trainval": "val"}


@dataclass(frozen=True)
class Sample:
    id: str
    image: np.ndarray  # HxWx3 uint8 RGB
    labels: np.ndarray | None = None


@dataclass(frozen=True)
class ImageSet:
    """A reproducible list of images; iterating re-reads them one at a time."""

    source: str
    ids: tuple[str, ...]
    fingerprint: str  # sha256 over the ids and decoded pixels (ids and file hash for video frames)
    skipped: int = 0  # corrupt or unreadable candidates passed over
    num_classes: int | None = None
    ignore_index: int | None = None
    _read: Callable[[], Iterator[Sample]] = field(default=lambda: iter(()), repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[Sample]:
        return self._read()

    @property
    def has_masks(self) -> bool:
        return self.num_classes is not None


def _fingerprint(parts: Sequence[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for ident, digest in parts:
        h.update(f"{ident}\0{digest}\n".encode())
    return h.hexdigest()


def _pixels_sha(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


def _warn_short(found: int, wanted: int, where: str) -> None:
    if found < wanted:
        log.warning("%s: only %d usable calibration images, fewer than the %d asked for; using all of them",
                    where, found, wanted)


# --- folder ---------------------------------------------------------------------------------------------------
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv")


def _read_or_none(path: Path, errors: list[str] | None = None) -> np.ndarray | None:
    """The one decoder's image, or None for a corrupt file (skipped and counted, not fatal here); the decoder's
    message is appended to `errors` (the reason shown when no file decodes)."""
    try:
        return read_image(path)
    except FcnDeployError as e:
        log.debug("skipping %s: %s", path, e)
        if errors is not None:
            errors.append(str(e))
        return None


def _not_a_folder(folder: Path) -> FcnDeployError:
    if folder.suffix.lower() in VIDEO_SUFFIXES:
        return FcnDeployError(
            f"{folder}: --calib-data takes a folder of images; for a video pass --calib-video {folder}"
        )
    if folder.exists():
        return FcnDeployError(
            f"{folder}: is a file, not a folder; pass a folder of images to --calib-data (or a video to --calib-video)"
        )
    return FcnDeployError(f"{folder}: calibration folder does not exist; pass a folder of images")


def from_folder(folder: Path, num_images: int, seed: int, num_eval: int | None) -> tuple[ImageSet, ImageSet]:
    """Seeded pick of `num_images` decodable images under `folder`; held-out set = the images not picked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise _not_a_folder(folder)
    files = list_images(folder, recursive=True)
    if not files:
        raise FcnDeployError(
            f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the calibration folder; "
            "point --calib-data at a folder of representative images"
        )
    order = np.random.default_rng(seed).permutation(len(files))
    chosen: list[Path] = []
    parts: list[tuple[str, str]] = []
    skipped, tried, errors = 0, 0, []
    for tried, k in enumerate(order, 1):  # noqa: B007 - `tried` is read after the loop
        image = _read_or_none(files[k], errors)
        if image is None:
            skipped += 1
            continue
        chosen.append(files[k])
        parts.append((files[k].relative_to(folder).as_posix(), _pixels_sha(image)))
        if len(chosen) == num_images:
            break
    if skipped:
        log.warning("%s: skipped %d corrupt or unreadable image(s)", folder, skipped)
    if not chosen:
        raise FcnDeployError(
            f"{folder}: none of the {len(files)} image file(s) could be decoded (all corrupt); the first: {errors[0]}"
        )
    _warn_short(len(chosen), num_images, str(folder))
    rest = [files[k] for k in order[tried:]]
    if num_eval is not None:
        rest = rest[:num_eval]

    def reader(paths: list[Path]) -> Callable[[], Iterator[Sample]]:
        def read() -> Iterator[Sample]:
            for p in paths:
                image = _read_or_none(p)
                if image is not None:
                    yield Sample(p.relative_to(folder).as_posix(), image)
        return read

    calib = ImageSet(f"folder:{folder.resolve()}", tuple(i for i, _ in parts), _fingerprint(parts), skipped,
                     _read=reader(chosen))
    held = ImageSet(f"folder:{folder.resolve()}", tuple(p.relative_to(folder).as_posix() for p in rest), "",
                    _read=reader(rest))
    return calib, held


# --- dataset split ----------------------------------------------------------------------------------------------
def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """'camvid' -> ('camvid', 'train'); 'camvid:val' -> ('camvid', 'val')."""
    name, _, split = spec.partition(":")
    if not name:
        raise FcnDeployError(f"--calib-dataset {spec!r}: expected NAME[:SPLIT], e.g. camvid:train")
    return name, split or "train"


def _load(ds, i: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    try:
        image, labels = ds[i]
    except (OSError, ValueError, FcnDeployError) as e:  # a corrupt file inside the dataset: skip, count
        log.debug("skipping %s: %s", ds.image_id(i), e)
        return None
    return image, labels


def stratified_order(presence: np.ndarray, num_images: int, seed: int) -> list[int]:
    """Indices into `presence` (images x classes, bool): rare classes get a quota first, then seeded order."""
    n, num_classes = presence.shape
    order = list(np.random.default_rng(seed).permutation(n))
    quota = max(1, math.ceil(num_images / (2 * max(num_classes, 1))))
    picked: list[int] = []
    taken = np.zeros(n, bool)
    for c in np.argsort(presence.sum(axis=0), kind="stable"):  # rarest class first
        have = int(presence[picked, c].sum()) if picked else 0
        for i in order:
            if have >= quota or len(picked) == num_images:
                break
            if not taken[i] and presence[i, c]:
                picked.append(i)
                taken[i] = True
                have += 1
    picked += [i for i in order if not taken[i]][: num_images - len(picked)]
    return picked


def from_dataset(
    spec: str, root: Path | None, num_images: int, seed: int, num_eval: int | None
) -> tuple[ImageSet, ImageSet]:
    """Calibration images from one split (stratified by mask classes), held-out images from another split."""
    from fcn_deploy.core.datasets import build_dataset

    name, split = parse_dataset_spec(spec)
    if root is None and name != "synthetic":
        raise FcnDeployError(f"--calib-dataset {spec}: needs --data-root DIR (where the {name} data lives)")
    ds = build_dataset(name, root, split)
    if len(ds) == 0:
        raise FcnDeployError(f"dataset {name}:{split} under {root}: has no images")
    usable: list[int] = []
    digests: dict[int, str] = {}
    presence_rows: list[np.ndarray] = []
    skipped = 0
    check_all = ds.has_masks  # class presence needs every mask; otherwise decode only what gets picked
    order = range(len(ds)) if check_all else np.random.default_rng(seed).permutation(len(ds))
    for i in order:
        item = _load(ds, int(i))
        if item is None:
            skipped += 1
            continue
        image, labels = item
        usable.append(int(i))
        digests[int(i)] = _pixels_sha(image)
        if check_all:
            valid = labels[labels != ds.ignore_index] if ds.ignore_index is not None else labels.ravel()
            valid = valid[(valid >= 0) & (valid < ds.num_classes)]
            presence_rows.append(np.bincount(valid.ravel(), minlength=ds.num_classes)[: ds.num_classes] > 0)
        elif len(usable) == num_images:
            break
    where = f"dataset {name}:{split}"
    if skipped:
        log.warning("%s: skipped %d corrupt or unreadable image(s)", where, skipped)
    if not usable:
        raise FcnDeployError(f"{where} under {root}: none of its images could be read (all corrupt)")
    if check_all:
        picked = [usable[k] for k in stratified_order(np.array(presence_rows), num_images, seed)]
    else:
        picked = usable[:num_images]
    _warn_short(len(picked), num_images, where)
    parts = [(ds.image_id(i), digests[i]) for i in picked]
    masks = (ds.num_classes, ds.ignore_index) if ds.has_masks else (None, None)

    def reader(d, indices: list[int]) -> Callable[[], Iterator[Sample]]:
        def read() -> Iterator[Sample]:
            for i in indices:
                item = _load(d, i)
                if item is not None:
                    yield Sample(d.image_id(i), item[0], item[1] if d.has_masks else None)
        return read

    calib = ImageSet(f"{name}:{split}" + (f"@{Path(root).resolve()}" if root else ""), tuple(i for i, _ in parts),
                     _fingerprint(parts), skipped, *masks, _read=reader(ds, picked))
    held_split = OTHER_SPLIT.get(split)
    try:
        held_ds = build_dataset(name, root, held_split) if held_split else None
    except FcnDeployError:
        held_ds = None
    if held_ds is not None and len(held_ds):
        indices = list(range(len(held_ds)))[:num_eval]
        held_source, held_masks = f"{name}:{held_split}", held_ds
    else:  # no other split: the images of this split that calibration did not use
        chosen = set(picked)
        indices = [i for i in range(len(ds)) if i not in chosen][:num_eval]
        held_source, held_masks = f"{name}:{split} (not used for calibration)", ds
    held = ImageSet(held_source, tuple(held_masks.image_id(i) for i in indices), "", 0,
                    *((held_masks.num_classes, held_masks.ignore_index) if held_masks.has_masks else (None, None)),
                    _read=reader(held_masks, indices))
    return calib, held


# --- video ------------------------------------------------------------------------------------------------------
def _open_video(path: Path):
    cv2 = import_cv2()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FcnDeployError(f"{path}: cannot open this video with OpenCV; check the file or convert it to mp4")
    return cap


def _count_frames(path: Path) -> int:
    cv2 = import_cv2()
    cap = _open_video(path)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n > 0:
            return n
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


def _frames(path: Path, wanted: Sequence[int]) -> Callable[[], Iterator[Sample]]:
    def read() -> Iterator[Sample]:
        targets = set(wanted)
        last = max(targets) if targets else -1
        cap = _open_video(path)
        try:
            for k in range(last + 1):
                if k in targets:
                    ok, frame = cap.read()
                    if not ok:
                        return
                    yield Sample(f"frame{k:06d}", bgr_to_rgb(frame))
                elif not cap.grab():
                    return
        finally:
            cap.release()
    return read


def from_video(path: Path, num_images: int, seed: int, num_eval: int | None) -> tuple[ImageSet, ImageSet]:
    """Seeded frame indices (read in order); held-out = evenly spaced frames that calibration did not use."""
    from fcn_deploy.core.atomic import sha256_file

    path = Path(path)
    if not path.is_file():
        raise FcnDeployError(f"{path}: no such video; check --calib-video")
    total = _count_frames(path)
    if total == 0:
        raise FcnDeployError(f"{path}: the video has no readable frames")
    n = min(num_images, total)
    _warn_short(n, num_images, str(path))
    picked = sorted(int(k) for k in np.random.default_rng(seed).choice(total, n, replace=False))
    rest = sorted(set(range(total)) - set(picked))
    if num_eval is not None and len(rest) > num_eval:
        rest = [rest[int(j)] for j in np.linspace(0, len(rest) - 1, num_eval)]
    file_sha = sha256_file(path)
    ids = tuple(f"frame{k:06d}" for k in picked)
    calib = ImageSet(f"video:{path.resolve()}", ids, _fingerprint([(i, file_sha) for i in ids]), 0,
                     _read=_frames(path, picked))
    held = ImageSet(f"video:{path.resolve()}", tuple(f"frame{k:06d}" for k in rest), "", _read=_frames(path, rest))
    return calib, held
