"""Sources on real files, and the live-source logic (latest frame, drops, time-outs, reconnects) on a real
paced reader that plays a video file at a fixed rate, stalls or fails on cue."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
from PIL import Image
from test_runtime_helpers import write_video

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.runtime.sources.files import ImageFilesSource, VideoFileSource
from fcn_deploy.runtime.sources.live import LiveSource, SourceUnavailableError
from fcn_deploy.runtime.sources.opening import camera_source, open_source


def test_video_file_yields_every_frame_in_order(tmp_path):
    written = write_video(tmp_path / "v.avi", 12)
    src = open_source(str(tmp_path / "v.avi"))
    assert isinstance(src, VideoFileSource) and not src.live and src.fps == pytest.approx(25.0)
    frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    for f, want in zip(frames, written, strict=True):
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
        assert np.abs(f.image.astype(int) - want).mean() < 12  # MJPG is lossy; RGB order must be right
    assert frames[3].timestamp == pytest.approx(3 / 25.0, abs=1e-3)


def make_mixed_folder(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), np.uint8)).save(folder / "a_rgb.png")
    Image.fromarray(rng.integers(0, 255, (33, 21), np.uint8)).save(folder / "b_gray.png")
    Image.fromarray(rng.integers(0, 255, (64, 48, 4), np.uint8), "RGBA").save(folder / "c_rgba.png")
    Image.fromarray(rng.integers(0, 255, (20, 90, 3), np.uint8)).save(folder / "d_small.jpg")
    (folder / "e_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_mixed_sizes_gray_rgba_and_a_corrupt_file(tmp_path, caplog):
    folder = make_mixed_folder(tmp_path / "imgs")
    src = open_source(str(folder))
    with caplog.at_level(logging.WARNING):
        frames = list(src)
    assert [f.name for f in frames] == ["a_rgb", "b_gray", "c_rgba", "d_small"]
    assert [f.image.shape for f in frames] == [(40, 50, 3), (33, 21, 3), (64, 48, 3), (20, 90, 3)]
    gray = np.asarray(Image.open(folder / "b_gray.png"))
    assert (frames[1].image == gray[:, :, None]).all()
    rgba = np.asarray(Image.open(folder / "c_rgba.png"))
    assert (frames[2].image == rgba[:, :, :3]).all()  # RGB order kept, alpha dropped
    assert src.skipped == 1 and src.skipped_names[0].endswith("e_corrupt.png")
    assert "e_corrupt.png" in caplog.text and "skipped 1 unreadable" in caplog.text


def test_glob_single_image_and_errors(tmp_path):
    folder = make_mixed_folder(tmp_path / "imgs")
    assert [f.name for f in open_source(str(folder / "*.png"))] == ["a_rgb", "b_gray", "c_rgba"]
    single = open_source(str(folder / "d_small.jpg"))
    assert isinstance(single, ImageFilesSource) and len(list(single)) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(FcnDeployError, match="folder has no images"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(FcnDeployError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(FcnDeployError, match="matches no files"):
        open_source(str(tmp_path / "*.webp"))
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 200)
    with pytest.raises(FcnDeployError, match="cannot open as a video"):
        open_source(str(tmp_path / "bad.mp4"))
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"nope")
    with pytest.raises(FcnDeployError, match="none of the 1 image"):
        list(open_source(str(only_bad)))


def test_camera_errors_fail_fast():
    t0 = time.monotonic()
    with pytest.raises(FcnDeployError, match="could not open camera 99"):
        list(camera_source("99", open_timeout_s=3.0))
    assert time.monotonic() - t0 < 10
    with pytest.raises(FcnDeployError, match="csi://N"):
        camera_source("csi://x")
    with pytest.raises(FcnDeployError, match="camera index"):
        camera_source("front")


def test_unreachable_stream_fails_fast():
    # A loopback port with nothing listening: the connection is refused at once.
    src = open_source("rtsp://127.0.0.1:9/live", open_timeout_s=3.0)
    assert src.live
    with pytest.raises(FcnDeployError, match="could not open stream rtsp://127.0.0.1:9/live"):
        list(src)


class PacedReader:
    """Plays a real video file at `fps`, like a camera. Per connection it can stall (block) or fail on cue."""

    connections = 0

    def __init__(
        self, path, fps, stall_at=None, fail_at=None, stall_s=30.0, open_ok=lambda n: True, hang_open_s=0
    ):
        self.path, self.period, self.hang_open_s = str(path), 1.0 / fps, hang_open_s
        self.stall_at, self.fail_at, self.stall_s, self.open_ok = stall_at, fail_at, stall_s, open_ok
        self.released = threading.Event()

    def open(self):
        import cv2

        type(self).connections += 1
        self.connection = type(self).connections
        time.sleep(self.hang_open_s)  # an RTSP server that accepts the TCP connection and never answers
        if not self.open_ok(self.connection):
            raise ConnectionError("refused")
        self.cap = cv2.VideoCapture(self.path)
        self.n, self.next_t = 0, time.perf_counter()

    def read(self):
        self.next_t += self.period
        time.sleep(max(0.0, self.next_t - time.perf_counter()))
        first = self.connection == 1
        if first and self.stall_at is not None and self.n == self.stall_at:
            time.sleep(self.stall_s)  # a hung driver: read() does not return
        if first and self.fail_at is not None and self.n == self.fail_at:
            return None
        ok, bgr = self.cap.read()
        if not ok:
            self.cap.set(1, 0)  # loop the file: a camera never ends
            ok, bgr = self.cap.read()
        self.n += 1
        return bgr[:, :, ::-1].copy()

    def close(self):
        self.cap.release() if hasattr(self, "cap") else None
        self.released.set()


def live(path, **reader_kw):
    PacedReader.connections = 0
    names = ("read_timeout_s", "max_reconnects", "backoff_s", "open_timeout_s")
    kw = {k: reader_kw.pop(k) for k in list(reader_kw) if k in names}
    kw.setdefault("backoff_s", 0.05)
    kw.setdefault("open_timeout_s", 2.0)
    return LiveSource(lambda: PacedReader(path, **reader_kw), "test camera", **kw)


def assert_real(frame):
    assert frame.image.shape == (48, 64, 3) and frame.image.max() > 200  # colour bands, never a black frame


def test_slow_consumer_gets_the_latest_frame_and_drops_are_counted(tmp_path):
    write_video(tmp_path / "v.avi", 20)
    src = live(tmp_path / "v.avi", fps=200)
    got = []
    for frame in src:
        assert_real(frame)
        got.append(frame.index)
        time.sleep(0.05)  # a consumer 10x slower than the camera
        if len(got) == 8:
            break
    src.close()
    gaps = got[-1] - got[0] + 1 - len(got)
    assert all(b > a for a, b in zip(got, got[1:], strict=False))
    assert gaps >= 7  # frames were replaced while the consumer was busy (about 10 per wait at full speed)
    assert src.dropped >= gaps
    assert src.reconnects == 0 and src.timeouts == 0


def test_hung_read_times_out_reconnects_and_resumes(tmp_path):
    write_video(tmp_path / "v.avi", 20)
    src = live(tmp_path / "v.avi", fps=100, stall_at=5, read_timeout_s=0.5)
    t0 = time.monotonic()
    frames = []
    for frame in src:
        assert_real(frame)
        frames.append(frame)
        if len(frames) == 15:
            break
    src.close()
    assert src.timeouts == 1 and src.reconnects == 1
    assert time.monotonic() - t0 < 10  # the 30 s stall was not waited out
    assert PacedReader.connections == 2


def test_failed_read_reconnects_without_substitute_frames(tmp_path):
    write_video(tmp_path / "v.avi", 20)
    src = live(tmp_path / "v.avi", fps=100, fail_at=4)
    frames = []
    for frame in src:
        assert_real(frame)
        frames.append(frame)
        if len(frames) == 10:
            break
    src.close()
    assert src.failed_reads == 1 and src.reconnects == 1 and src.timeouts == 0


def test_source_that_stays_down_gives_up_with_exit_code_2(tmp_path):
    write_video(tmp_path / "v.avi", 20)
    src = live(tmp_path / "v.avi", fps=100, fail_at=3, open_ok=lambda n: n == 1, max_reconnects=3)
    t0 = time.monotonic()
    frames = []
    with pytest.raises(SourceUnavailableError, match="camera unavailable: no frames after 3 reconnect") as e:
        for frame in src:
            frames.append(frame)
    assert e.value.exit_code == 2
    assert len(frames) + src.dropped == 3  # only the real frames before the failure (a busy consumer drops)
    assert [f.index for f in frames] == sorted(f.index for f in frames) and frames[-1].index == 2
    assert PacedReader.connections == 4  # 1 + 3 refused attempts
    assert time.monotonic() - t0 < 10  # back-off 0.05 + 0.1 + 0.2 s: bounded


def test_first_frame_must_arrive(tmp_path):
    write_video(tmp_path / "v.avi", 20)
    src = live(tmp_path / "v.avi", fps=100, stall_at=0, read_timeout_s=0.3)
    with pytest.raises(FcnDeployError, match="delivered no frame within 0.3 s"):
        list(src)


def test_open_that_hangs_times_out(tmp_path):
    write_video(tmp_path / "v.avi", 5)
    src = live(tmp_path / "v.avi", fps=100, hang_open_s=20, open_timeout_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(FcnDeployError, match="could not open test camera"):
        list(src)
    assert time.monotonic() - t0 < 5 and src.timeouts == 1


@pytest.mark.parametrize("channels", [None, 1, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_bgr_to_rgb_is_the_plain_channel_reversal(channels, dtype):
    from fcn_deploy.core.preprocess import to_rgb
    from fcn_deploy.runtime.opencv import bgr_to_rgb, rgb_to_bgr

    shape = (9, 14) if channels is None else (9, 14, channels)
    image = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    for frame in (image, image[::2, 1::2]):  # contiguous and strided
        want = to_rgb(frame[:, :, 2::-1] if frame.ndim == 3 and frame.shape[2] >= 3 else frame)
        got = bgr_to_rgb(frame)
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
        back = rgb_to_bgr(got)
        assert back.flags.c_contiguous
        np.testing.assert_array_equal(back, got[:, :, ::-1])
