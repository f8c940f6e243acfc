"""`fcn-deploy infer` end to end: real files through the CLI, no torch on the ONNX path, Ctrl-C leaves a
playable video, one-line errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_runtime_helpers import PALETTE, colour_image, count_video_frames, make_channel_model, write_video

from fcn_deploy.cli import main
from fcn_deploy.runtime.sinks import display_available
from fcn_deploy.runtime.visualize import colormap, softmax

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from fcn_deploy.cli import main; main()"]


def infer(*args: str):
    return CliRunner().invoke(main, ["infer", *map(str, args)])


def test_video_file_to_video_labels_and_stats(tmp_path):
    model = make_channel_model(tmp_path / "m.onnx")
    write_video(tmp_path / "in.avi", 20)
    r = infer(model, "--source", tmp_path / "in.avi", "--output", tmp_path / "out.avi", "--headless",
              "--save-labels", tmp_path / "labels", "--stats", "--legend")  # fmt: skip
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats["frames"] == 20 and stats["dropped"] == 0
    assert set(stats["stage_ms"]) == {"capture", "pre", "infer", "post", "draw", "write"}
    assert "FPS" in r.stderr
    assert count_video_frames(tmp_path / "out.avi") == 20
    assert len(list((tmp_path / "labels").glob("*.png"))) == 20


def test_folder_overlay_colours_labels_round_trip_and_skipped_file(tmp_path, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    truth = {}
    for i, (h, w) in enumerate([(30, 45), (48, 64)]):
        image, labels = colour_image(h, w, i)
        Image.fromarray(image).save(folder / f"f{i}.png")
        truth[f"f{i}"] = labels
    gray = np.full((20, 24), 128, np.uint8)
    Image.fromarray(gray).save(folder / "gray.png")  # equal channels: argmax picks class 0
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    model = make_channel_model(tmp_path / "m.onnx", ("labels", "probs"))
    r = infer(model, "--source", folder, "--output", tmp_path / "vis", "--alpha", "1", "--native",
              "--save-labels", tmp_path / "labels")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "skipped 1" in r.stderr  # in the summary line
    assert "broken.jpg" in caplog.text  # the warning names the file (pytest captures logging)
    assert sorted(p.stem for p in (tmp_path / "vis").glob("*.png")) == ["f0", "f1", "gray"]
    for name, labels in truth.items():
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED),
                                      labels)  # fmt: skip
        vis = np.asarray(Image.open(tmp_path / "vis" / f"{name}.png"))
        for c, colour in enumerate(PALETTE):
            assert (vis[labels == c] == colour).all()
    r = infer(model, "--source", folder / "f1.png", "--output", tmp_path / "heat.png", "--visualize",
              "heatmap:blue", "--alpha", "1")  # fmt: skip
    assert r.exit_code == 0, r.output
    heat = np.asarray(Image.open(tmp_path / "heat.png"))
    image = np.asarray(Image.open(folder / "f1.png")).astype(np.float32) / 255  # the model's logits
    p_blue = softmax(image.transpose(2, 0, 1), 0)[2]
    want = colormap(p_blue)
    np.testing.assert_array_equal(heat[:24], want[:24])  # the bottom rows carry the "P(blue)" caption
    assert want[truth["f1"] == 2][:, 0].mean() > want[truth["f1"] != 2][:, 0].mean() + 60  # hot where blue


def test_onnx_inference_imports_no_torch(tmp_path):
    model = make_channel_model(tmp_path / "m.onnx")
    write_video(tmp_path / "in.avi", 5)
    code = (
        "import sys\nfrom fcn_deploy.cli import main\n"
        f"main.main(['infer', {str(model)!r}, '--source', {str(tmp_path / 'in.avi')!r}, '--output', "
        f"{str(tmp_path / 'o.mp4')!r}, '--visualize', 'side-by-side'], standalone_mode=False)\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "NO_TORCH"
    assert count_video_frames(tmp_path / "o.mp4") == 5


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_leaves_a_playable_video_and_exits_128_plus_signal(tmp_path, sig, code):
    model = make_channel_model(tmp_path / "slow.onnx", heavy_layers=3)
    frames = 2000  # a fast CPU wrote ~390 frames by the signal here, so 400 once all ran; 5x that margin
    write_video(tmp_path / "in.avi", frames, size=(120, 160))
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [*CLI, "infer", str(model), "--source", str(tmp_path / "in.avi"),
         "--output", str(out), "--headless"],  # fmt: skip
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        p.stat().st_size > 2000 for p in tmp_path.glob(".out.*tmp.mp4")
    ):
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    n = count_video_frames(out)
    assert 0 < n < frames  # playable, and really interrupted
    assert not list(tmp_path.glob(".out.*"))


def one_line_error(r, *needles: str) -> None:
    assert r.exit_code != 0
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def model(tmp_path):
    return make_channel_model(tmp_path / "m.onnx")


def test_bad_input_errors(tmp_path, model):
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    write_video(tmp_path / "in.avi", 3)
    one_line_error(infer(model, "--camera", "99", "--open-timeout", "3"), "could not open camera 99")
    one_line_error(infer(model, "--source", "http://127.0.0.1:9/cam.mjpg", "--open-timeout", "3"),
                   "could not open stream http://127.0.0.1:9/cam.mjpg")  # fmt: skip
    one_line_error(infer(model, "--source", tmp_path / "nope.mp4"), "nope.mp4", "no such file")
    one_line_error(infer(model, "--source", tmp_path / "empty"), "folder has no images")
    one_line_error(infer(model, "--source", tmp_path / "in.avi", "--output", tmp_path / "afile" / "o.mp4"),
                   "cannot write", "writable")  # fmt: skip
    one_line_error(infer(model, "--source", tmp_path / "in.avi", "--visualize", "heatmap:dog"),
                   "'dog' is not in this model", "red, green, blue")  # fmt: skip
    nocard = make_channel_model(tmp_path / "nocard.onnx", card=False)
    one_line_error(infer(nocard, "--source", tmp_path / "in.avi"), "nocard.onnx", "no fcn-deploy model card")
    labels_only = make_channel_model(tmp_path / "lab.onnx", ("labels",))
    one_line_error(infer(labels_only, "--source", tmp_path / "in.avi", "--visualize", "heatmap:red"),
                   "heat map needs class scores")  # fmt: skip
    one_line_error(infer(model, "--source", tmp_path / "in.avi", "--camera", "0"), "exactly one of")
    one_line_error(infer(model, "--source", tmp_path / "in.avi", "--input-size", "9x"), "HEIGHTxWIDTH")
    one_line_error(infer(model, "--camera", "csi://0"), "GStreamer")
    one_line_error(infer(tmp_path / "m.xyz", "--source", tmp_path / "in.avi"), "no such model file")
    if not display_available():
        one_line_error(infer(model, "--source", tmp_path / "in.avi", "--display"), "no display here")


def test_unwritable_output_fails_in_a_subprocess_too(tmp_path, model):
    write_video(tmp_path / "in.avi", 3)
    (tmp_path / "afile").write_text("x")
    r = subprocess.run(
        [*CLI, "infer", str(model), "--source", str(tmp_path / "in.avi"),
         "--save-labels", str(tmp_path / "afile" / "labels")],  # fmt: skip
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [
        f"Error: {tmp_path / 'afile' / 'labels'}: cannot write label images here (Not a directory); "
        "choose a writable path"
    ]


@pytest.mark.slow
def test_real_exported_fcn8s_end_to_end(tmp_path):
    """`fcn-deploy export` (narrow, untrained FCN-8s, labels + probs) -> `fcn-deploy infer` with a heat map."""
    pytest.importorskip("torch")
    model = tmp_path / "fcn8s.onnx"
    r = CliRunner().invoke(main, ["export", "--variant", "fcn8s", "--width", "0.0625", "--padding", "same",
                                  "--num-classes", "5", "--head", "labels+probs", "--input-size", "48x64",
                                  "--min-shape", "32x32", "--check-sizes", "48x64", "--no-simplify", "-o", str(model)])  # fmt: skip
    assert r.exit_code == 0, r.output
    write_video(tmp_path / "in.avi", 6, size=(48, 64))
    r = infer(model, "--source", tmp_path / "in.avi", "--output", tmp_path / "heat.avi", "--visualize",
              "heatmap:class_1", "--save-labels", tmp_path / "labels", "--stats")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["frames"] == 6
    assert count_video_frames(tmp_path / "heat.avi") == 6
    labels = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((tmp_path / "labels").glob("*.png"))]
    assert len(labels) == 6 and all(lab.shape == (48, 64) and lab.max() < 5 for lab in labels)
