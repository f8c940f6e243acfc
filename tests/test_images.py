"""fcn_deploy.core.images: one decoder and one extension list for training data, calibration and inference."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fcn_deploy.calibration import images as calibration_images
from fcn_deploy.calibration.images import from_folder
from fcn_deploy.core.datasets import base as dataset_base
from fcn_deploy.core.datasets import build_dataset, camvid, folder
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.images import IMAGE_EXTENSIONS, list_images, read_image
from fcn_deploy.runtime.sources import opening
from fcn_deploy.runtime.sources.opening import open_source

ORIENTATION = 0x0112
ROTATE_90_CW = 6  # EXIF: "the stored pixels must be turned 90 degrees clockwise to be upright"


def upright_image(h: int = 24, w: int = 40) -> np.ndarray:
    """Smooth gradients (JPEG keeps them) with a distinct top-left corner, so a wrong rotation shows."""
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 128)], axis=-1).astype(np.uint8)
    image[:6, :6] = (255, 0, 0)
    return image


def write_phone_photo(path, upright: np.ndarray) -> None:
    """Stored sideways (as a phone held in portrait writes it), upright only by its EXIF orientation tag."""
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # turned 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[ORIENTATION] = ROTATE_90_CW
    Image.fromarray(stored).save(path, quality=95, exif=exif)


def test_exif_rotated_jpeg_is_the_same_upright_array_in_training_calibration_and_inference(tmp_path):
    upright = upright_image()
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("background\nthing\n")
    photo = root / "images" / "phone.jpg"
    write_phone_photo(photo, upright)
    with Image.open(photo) as im:
        assert im.size == (24, 40)  # stored sideways: W x H of the raw pixels

    from_dataset = build_dataset("folder", str(root), "train").image(0)
    calib, _ = from_folder(root / "images", 1, seed=0, num_eval=None)
    from_calibration = next(iter(calib)).image
    from_inference = next(iter(open_source(str(root / "images")))).image

    assert from_dataset.shape == upright.shape and from_dataset.dtype == np.uint8
    np.testing.assert_array_equal(from_dataset, from_calibration)
    np.testing.assert_array_equal(from_dataset, from_inference)
    assert np.abs(from_dataset.astype(int) - upright).mean() < 3  # upright, not merely the same (JPEG is lossy)
    assert from_dataset[:4, :4, 0].min() > 200 and from_dataset[:4, :4, 1].max() < 60  # red corner top-left


def test_opencv_agrees_on_the_orientation(tmp_path):
    """cv2.IMREAD_COLOR (what calibration used) also turns the photo upright; IMREAD_UNCHANGED did not."""
    cv2 = pytest.importorskip("cv2")
    upright = upright_image()
    write_phone_photo(tmp_path / "p.jpg", upright)
    ours = read_image(tmp_path / "p.jpg")
    theirs = cv2.imread(str(tmp_path / "p.jpg"), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert theirs.shape == ours.shape
    assert np.abs(theirs.astype(int) - ours).max() <= 2  # the two JPEG decoders may round differently
    assert cv2.imread(str(tmp_path / "p.jpg"), cv2.IMREAD_UNCHANGED).shape[:2] == (40, 24)


def test_one_extension_list_and_one_listing_everywhere():
    assert calibration_images.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert opening.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert folder.list_images is camvid.list_images is opening.list_images is calibration_images.list_images
    assert folder.list_images is list_images
    assert dataset_base.read_image is calibration_images.read_image is read_image
    assert not hasattr(dataset_base, "IMAGE_SUFFIXES")


def test_list_images_flat_or_recursive(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.PNG", "a.jpg", "c.ppm", "sub/d.webp"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.ppm"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)] == [
        "a.jpg", "b.PNG", "c.ppm", "sub/d.webp"
    ]


def test_alpha_gray_and_16_bit_follow_one_rule(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (6, 7, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgba[:, :, :3])  # dropped, not composited
    gray = rng.integers(0, 256, (6, 7), np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), np.repeat(gray[:, :, None], 3, axis=2))
    wide = rng.integers(0, 65536, (6, 7), np.uint16)
    Image.fromarray(wide).save(tmp_path / "gray16.png")
    expected = np.repeat((wide >> 8).astype(np.uint8)[:, :, None], 3, axis=2)  # top 8 bits, not clipped at 255
    np.testing.assert_array_equal(read_image(tmp_path / "gray16.png"), expected)


def test_corrupt_file_is_one_line_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    with pytest.raises(FcnDeployError, match=r"cannot read image .*x\.png") as info:
        read_image(tmp_path / "x.png")
    assert "\n" not in str(info.value)
