"""The threaded pipeline on real files and a real paced live source: counts, exact colours, drops, no model run
on a missing frame."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from test_runtime_helpers import PALETTE, colour_image, count_video_frames, make_channel_model, write_video
from test_runtime_sources import PacedReader, live

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.shapes import ShapeRange
from fcn_deploy.runtime.ort_backend import OrtBackend
from fcn_deploy.runtime.pipeline import LatestQueue, Pipeline, model_input_hw
from fcn_deploy.runtime.sinks import ImageFolderSink, LabelSink, Sink, VideoSink
from fcn_deploy.runtime.sources.opening import open_source
from fcn_deploy.runtime.visualize import Visualizer, VisualizeSpec


def make_pipeline(model, source, sinks, mode="overlay", alpha=1.0, **kw):
    backend = model if isinstance(model, Backend) else OrtBackend(model)
    vis = Visualizer(backend.card, VisualizeSpec.parse(mode, backend.card, alpha))
    return Pipeline(source, backend, vis, sinks, **kw)


def colour_folder(folder, sizes):
    folder.mkdir()
    truth = {}
    for i, (h, w) in enumerate(sizes):
        image, labels = colour_image(h, w, i)
        Image.fromarray(image).save(folder / f"img{i}.png")
        truth[f"img{i}"] = labels
    return truth


def test_video_to_video_keeps_every_frame(tmp_path):
    write_video(tmp_path / "in.avi", 25)
    src = open_source(str(tmp_path / "in.avi"))
    sink = VideoSink(tmp_path / "out.mp4", src.fps)
    stats = make_pipeline(make_channel_model(tmp_path / "m.onnx"), src, [sink]).run()
    assert stats.frames == 25 and stats.dropped == 0
    assert count_video_frames(tmp_path / "out.mp4") == 25
    assert not list(tmp_path.glob(".*tmp*"))  # the temp file was moved into place
    assert all(len(stats.stage_ms[s]) == 25 for s in ("capture", "pre", "infer", "post", "draw", "write"))


def test_a_one_frame_video_is_published(tmp_path):
    # a run stopped after its first frame (Ctrl-C under load): seeking back to frame 0 of a 1-frame mp4 fails in
    # OpenCV, which the read-back check once took for a truncated file
    write_video(tmp_path / "in.avi", 1)
    src = open_source(str(tmp_path / "in.avi"))
    stats = make_pipeline(make_channel_model(tmp_path / "m.onnx"), src, [VideoSink(tmp_path / "out.mp4", src.fps)]).run()
    assert stats.frames == 1 and count_video_frames(tmp_path / "out.mp4") == 1


def test_overlay_pixels_carry_palette_colours_and_labels_round_trip(tmp_path):
    truth = colour_folder(tmp_path / "in", [(30, 45), (48, 64), (21, 90)])
    sinks = [ImageFolderSink(tmp_path / "vis"), LabelSink(tmp_path / "labels", 3)]
    model = make_channel_model(tmp_path / "m.onnx", ("logits",))  # scores only: argmax in the backend
    stats = make_pipeline(model, open_source(str(tmp_path / "in")), sinks, native=True).run()
    assert stats.frames == 3
    for name, labels in truth.items():
        saved = cv2.imread(str(tmp_path / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert saved.dtype == np.uint8
        np.testing.assert_array_equal(saved, labels)
        vis = np.asarray(Image.open(tmp_path / "vis" / f"{name}.png"))
        for c, colour in enumerate(PALETTE):
            assert (vis[labels == c] == colour).all()


def test_resized_input_labels_come_back_at_frame_size(tmp_path):
    truth = colour_folder(tmp_path / "in", [(60, 90)])
    sinks = [LabelSink(tmp_path / "labels", 3)]
    make_pipeline(make_channel_model(tmp_path / "m.onnx"), open_source(str(tmp_path / "in")), sinks,
                  input_size=(20, 30)).run()  # fmt: skip
    saved = cv2.imread(str(tmp_path / "labels" / "img0.png"), cv2.IMREAD_UNCHANGED)
    assert saved.shape == (60, 90)
    inner = np.r_[3:27, 33:57, 63:87]  # away from the band edges that the down-sampling blurs
    np.testing.assert_array_equal(saved[:, inner], truth["img0"][:, inner])
    assert set(np.unique(saved)) <= {0, 1, 2}  # nearest neighbour never invents a class


def test_max_frames_and_input_size_rules(tmp_path):
    write_video(tmp_path / "in.avi", 30)
    stats = make_pipeline(make_channel_model(tmp_path / "m.onnx"), open_source(str(tmp_path / "in.avi")), [],
                          max_frames=7).run()  # fmt: skip
    assert stats.frames == 7
    card = ShapeRange((32, 32), (360, 480), (360, 480))
    assert model_input_hw((720, 960), card, None, False) == (360, 480)
    assert model_input_hw((720, 960), card, None, True) == (720, 960)
    assert model_input_hw((16, 16), card, None, False) == (32, 32)
    assert model_input_hw((720, 960), card, (100, 200), False) == (100, 200)
    fixed = ShapeRange((64, 64), (64, 64), (64, 64))
    assert model_input_hw((720, 960), fixed, None, False) == (64, 64)
    with pytest.raises(FcnDeployError, match="fixed 64x64"):
        model_input_hw((720, 960), fixed, None, True)


class RecordingSlowBackend(Backend):
    """The real ORT backend behind a fixed delay (a model slower than the camera); records what it was fed."""

    def __init__(self, inner: OrtBackend, delay_s: float):
        self.inner, self.card, self.delay_s, self.name = inner, inner.card, delay_s, "slow-ort"
        self.batches: list[np.ndarray] = []

    def run(self, batch):
        self.batches.append(batch)
        time.sleep(self.delay_s)
        return self.inner.run(batch)


def test_live_source_with_slow_model_drops_stale_frames(tmp_path):
    write_video(tmp_path / "v.avi", 20)
    backend = RecordingSlowBackend(OrtBackend(make_channel_model(tmp_path / "m.onnx")), 0.04)
    src = live(tmp_path / "v.avi", fps=100)
    written = []
    sink = LabelSink(tmp_path / "labels", 3)
    stats = make_pipeline(backend, src, [sink], max_frames=12,
                          on_frame=lambda f, o: written.append(f.index)).run()  # fmt: skip
    assert stats.frames == 12
    assert stats.dropped >= written[-1] - written[0] + 1 - len(written) > 0  # the camera outran the model
    assert stats.latency_ms and max(stats.latency_ms) < 2000  # latency stays bounded: no backlog builds up
    assert all(b.max() > 0.7 for b in backend.batches)  # every model input was a real (coloured) frame
    assert written == sorted(written)


def test_live_stall_never_runs_the_model_on_a_missing_frame(tmp_path):
    write_video(tmp_path / "v.avi", 20)
    backend = RecordingSlowBackend(OrtBackend(make_channel_model(tmp_path / "m.onnx")), 0.0)
    src = live(tmp_path / "v.avi", fps=50, stall_at=4, fail_at=None, read_timeout_s=0.5)
    stats = make_pipeline(backend, src, [], max_frames=10).run()
    assert stats.frames == 10 and stats.timeouts == 1 and stats.reconnects == 1
    assert PacedReader.connections == 2
    assert len(backend.batches) >= 10 and all(b.max() > 0.7 for b in backend.batches)


def test_latest_queue_replaces_and_counts():
    q = LatestQueue()
    for i in range(5):
        q.put(i)
    assert q.get() == 4 and q.dropped == 4


class RecordingSink(Sink):
    """Keeps what reaches it (frame index, labels, OpenCV's pool size at the time); can act at a given frame."""

    def __init__(self, at: int | None = None, action=None, delays=()):
        self.seen: list[tuple[int, np.ndarray]] = []
        self.opencv_threads: list[int] = []
        self.at, self.action, self.delays, self.closed = at, action, list(delays), 0

    def write(self, frame, image, labels):
        self.seen.append((frame.index, labels.copy()))
        self.opencv_threads.append(cv2.getNumThreads())
        if self.delays:
            time.sleep(self.delays[frame.index % len(self.delays)])
        if frame.index == self.at:
            self.action()

    def close(self):
        self.closed += 1


class JitterBackend(Backend):
    """The real ORT backend with uneven per-frame delays (the queues fill and drain); can fail at a batch.
    streams=True: it has a concurrent mode (the inner backend's), sharing the call count and recording how many
    runs were in flight at once."""

    def __init__(self, inner: OrtBackend, delays=(0.0,), fail_at: int | None = None, streams: bool = False,
                 shared: dict | None = None):  # fmt: skip
        self.inner, self.card, self.name = inner, inner.card, "jitter-ort"
        self.delays, self.fail_at, self.streams = delays, fail_at, streams
        self.shared = shared if shared is not None else {"calls": 0, "busy": 0, "most_busy": 0, "closed": 0}
        self._lock = threading.Lock()

    @property
    def calls(self):
        return self.shared["calls"]

    def run(self, batch):
        with self._lock:
            n = self.shared["calls"]
            self.shared["calls"] += 1
            self.shared["busy"] += 1
            self.shared["most_busy"] = max(self.shared["most_busy"], self.shared["busy"])
        try:
            if n == self.fail_at:
                raise RuntimeError(f"model failed on batch {n}")
            time.sleep(self.delays[n % len(self.delays)])
            return self.inner.run(batch)
        finally:
            with self._lock:
                self.shared["busy"] -= 1

    def concurrent(self, streams):
        if not self.streams:
            return None
        twin = JitterBackend(self.inner.concurrent(streams), self.delays, self.fail_at, shared=self.shared)
        twin._lock = self._lock
        return twin

    def close(self):
        self.shared["closed"] += 1


def pipeline_threads():
    return [t.name for t in threading.enumerate() if t.name in ("capture", "pre", "post") or
            t.name.startswith("infer")]  # fmt: skip


def assert_in_order_with_own_labels(seen, count):
    assert [i for i, _ in seen] == list(range(count))
    for i, labels in seen:  # frame i is colour bands shifted by i: its labels, not a neighbour's
        want = colour_image(48, 64, i)[1]
        inner = np.r_[4:18, 25:39, 46:60]  # away from the band edges MJPG blurs (and the brightness tag)
        np.testing.assert_array_equal(labels[8:, inner], want[8:, inner])


def test_queues_keep_frame_order_and_each_frame_its_own_labels(tmp_path):
    write_video(tmp_path / "v.avi", 30)
    backend = JitterBackend(OrtBackend(make_channel_model(tmp_path / "m.onnx")), (0.0, 0.012, 0.0, 0.0, 0.02))
    sink = RecordingSink(delays=(0.0, 0.0, 0.015))
    stats = make_pipeline(backend, open_source(str(tmp_path / "v.avi")), [sink], queue_size=2).run()
    assert stats.frames == 30 and stats.dropped == 0 and sink.closed == 1
    assert_in_order_with_own_labels(sink.seen, 30)


def test_two_streams_keep_frame_order_and_each_frame_its_own_labels(tmp_path):
    # Uneven delays make the streams finish out of order: frames must still leave in order with their own labels.
    write_video(tmp_path / "v.avi", 30)
    backend = JitterBackend(OrtBackend(make_channel_model(tmp_path / "m.onnx")), (0.03, 0.0, 0.0, 0.02, 0.0),
                            streams=True)  # fmt: skip
    sink = RecordingSink()
    stats = make_pipeline(backend, open_source(str(tmp_path / "v.avi")), [sink], streams=2).run()
    assert stats.frames == 30 and stats.streams == 2 and stats.to_dict()["streams"] == 2
    assert backend.shared["most_busy"] == 2  # two runs were in flight at once
    assert backend.shared["closed"] == 1  # the pipeline closed the concurrent twin, not the backend it was given
    assert_in_order_with_own_labels(sink.seen, 30)
    assert pipeline_threads() == []


def test_streams_default_two_for_files_one_for_live_and_without_a_concurrent_mode(tmp_path):
    write_video(tmp_path / "v.avi", 6)
    model = make_channel_model(tmp_path / "m.onnx")
    ort_backend = OrtBackend(model)
    assert ort_backend.concurrent(2) is not None
    assert make_pipeline(ort_backend, open_source(str(tmp_path / "v.avi")), []).run().streams == 2
    assert make_pipeline(ort_backend, live(tmp_path / "v.avi", fps=100), [], max_frames=3).run().streams == 1
    plain = JitterBackend(OrtBackend(model))  # no concurrent mode: one stream, whatever was asked
    assert make_pipeline(plain, open_source(str(tmp_path / "v.avi")), [], streams=3).run().streams == 1
    assert make_pipeline(ort_backend, open_source(str(tmp_path / "v.avi")), [], streams=1).run().streams == 1
    with pytest.raises(FcnDeployError, match="--streams 0"):
        make_pipeline(ort_backend, open_source(str(tmp_path / "v.avi")), [], streams=0)


def test_a_failing_stream_stops_the_run_and_closes_everything(tmp_path):
    write_video(tmp_path / "v.avi", 30)
    backend = JitterBackend(OrtBackend(make_channel_model(tmp_path / "m.onnx")), (0.0, 0.01), fail_at=9,
                            streams=True)  # fmt: skip
    sink = RecordingSink()
    with pytest.raises(RuntimeError, match="batch 9"):
        make_pipeline(backend, open_source(str(tmp_path / "v.avi")), [sink], streams=2).run()
    assert sink.closed == 1 and backend.shared["closed"] == 1 and pipeline_threads() == []
    assert len(sink.seen) <= 9
    assert_in_order_with_own_labels(sink.seen, len(sink.seen))


def test_a_failing_stage_drains_the_pipeline_and_closes_the_sinks(tmp_path):
    write_video(tmp_path / "v.avi", 30)
    backend = JitterBackend(OrtBackend(make_channel_model(tmp_path / "m.onnx")), fail_at=9)
    sink = RecordingSink()
    before = cv2.getNumThreads()
    with pytest.raises(RuntimeError, match="batch 9"):
        make_pipeline(backend, open_source(str(tmp_path / "v.avi")), [sink]).run()
    assert sink.closed == 1 and pipeline_threads() == []
    assert len(sink.seen) <= 9
    assert_in_order_with_own_labels(sink.seen, len(sink.seen))
    assert cv2.getNumThreads() == before


SIGINT_CASE = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_runtime_pipeline import (RecordingSink, VideoSink, assert_in_order_with_own_labels, count_video_frames,
                                   make_channel_model, make_pipeline, open_source, pipeline_threads, write_video)
tmp = Path(sys.argv[1])
write_video(tmp / "v.avi", 40)
src = open_source(str(tmp / "v.avi"))
video = VideoSink(tmp / "out.mp4", src.fps)
sink = RecordingSink(at=5, action=lambda: os.kill(os.getpid(), signal.SIGINT))
handler = signal.getsignal(signal.SIGINT)
pipeline = make_pipeline(make_channel_model(tmp / "m.onnx"), src, [sink, video])
stats = pipeline.run()
assert stats.interrupted and pipeline.signal_received == signal.SIGINT, stats
assert 6 <= stats.frames < 40 and pipeline_threads() == [] and sink.closed == 1, (stats.frames, sink.closed)
assert_in_order_with_own_labels(sink.seen, stats.frames)
assert count_video_frames(tmp / "out.mp4") == stats.frames  # finalised, every written frame in it
assert signal.getsignal(signal.SIGINT) is handler
print("ok", stats.frames)
"""


def test_sigint_mid_run_stops_cleanly_with_a_playable_video(tmp_path):
    # a real SIGINT to its own process: run apart, so that the signal can never reach pytest itself
    proc = subprocess.run([sys.executable, "-c", SIGINT_CASE, str(tmp_path), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stdout + proc.stderr


def test_opencv_pool_is_one_thread_during_the_run_and_restored_after(tmp_path):
    write_video(tmp_path / "v.avi", 6)
    model = make_channel_model(tmp_path / "m.onnx")
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        ours, untouched = RecordingSink(), RecordingSink()
        make_pipeline(model, open_source(str(tmp_path / "v.avi")), [ours]).run()
        assert set(ours.opencv_threads) == {1} and cv2.getNumThreads() == 2
        make_pipeline(model, open_source(str(tmp_path / "v.avi")), [untouched], opencv_threads=None).run()
        assert set(untouched.opencv_threads) == {2}
    finally:
        cv2.setNumThreads(before)


def test_steady_fps_counts_from_the_first_frame_written(monkeypatch):
    from fcn_deploy.runtime import stats as stats_module

    clock = iter([1.0, 1.5, 2.0, 2.5])  # the first frame comes out once the pipeline has filled
    monkeypatch.setattr(stats_module.time, "perf_counter", lambda: next(clock))
    stats = stats_module.RunStats(started=0.0)
    assert stats.steady_fps() == 0.0
    for _ in range(4):
        stats.frame_done(10.0)
    stats.finished = 3.0
    assert stats.steady_fps() == pytest.approx(3 / 1.5) and stats.fps() == pytest.approx(4 / 3.0)
    assert stats.to_dict()["steady_fps"] == 2.0
