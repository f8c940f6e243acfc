"""The inference pipeline: capture -> preprocess -> infer -> post/draw -> write, overlapped on threads.

Stages are joined by bounded FIFO queues (one thread per stage, so frames stay in order), memory stays flat and a
slow stage applies back-pressure. For live sources the queue after capture keeps only the newest frame (older
ones are dropped and counted) so latency stays bounded; file sources drop nothing. Writing runs on the calling
(main) thread: OpenCV windows want it, and it is where Ctrl-C lands. SIGINT/SIGTERM stop the run cleanly; sinks
are always closed (finalised).

Thread budget: the runtime owns the cores (ONNX Runtime and OpenVINO size their pools to them); every other stage
is one thread, and OpenCV's own pool is cut to `opencv_threads` (default 1) for the run: decode, colour
conversion, drawing and encoding of a frame are sub-millisecond calls that OpenCV would otherwise fan out onto
the cores the model is computing on.

Streams: a file source (throughput, not latency) runs `streams` frames through the runtime at once where the
backend has a concurrent mode (Backend.concurrent: ONNX Runtime on the CPU, cores // streams threads each; frames
leave in order). With one 2-thread run at a time, every operator ends at a barrier, and a pool worker that the
capture or encode thread pre-empts holds up the other core: two 1-thread streams have no such barrier
(benchmarks/infer_pipeline.py, README). Live sources keep one stream: a second frame in flight is a frame older.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.environment import usable_cores
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.preprocess import preprocess, resize_labels
from fcn_deploy.core.shapes import ShapeRange
from fcn_deploy.runtime.opencv import import_cv2
from fcn_deploy.runtime.sinks import Sink
from fcn_deploy.runtime.sources.base import Frame, Source
from fcn_deploy.runtime.stats import RunStats
from fcn_deploy.runtime.visualize import Visualizer, draw_stats_line

log = logging.getLogger(__name__)

_END = object()
POLL_S = 0.05


class LatestQueue:
    """A one-slot queue whose put replaces an untaken item (counted in `dropped`)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self.dropped = 0

    def put(self, item: Any, timeout: float | None = None) -> None:
        with self._cond:
            if self._full and self._item is not _END:
                self.dropped += 1
            if not (self._full and self._item is _END):
                self._item, self._full = item, True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        with self._cond:
            if not self._full and not self._cond.wait_for(lambda: self._full, timeout):
                raise queue.Empty
            item, self._item, self._full = self._item, None, False
            return item


def model_input_hw(
    frame_hw: tuple[int, int],
    sizes: ShapeRange,
    requested: tuple[int, int] | None,
    native: bool,
) -> tuple[int, int]:
    """Network input size for a frame: --input-size, else the model's one size when `sizes` is fixed, else the
    frame's own size (--native, or by default scaled to fit the backend's input_sizes)."""
    if requested is not None:
        return requested
    fixed = sizes.fixed
    if fixed is not None:
        if native and tuple(fixed) != tuple(frame_hw):
            raise FcnDeployError(
                f"--native: this model takes a fixed {fixed[0]}x{fixed[1]} input, the frames are "
                f"{frame_hw[0]}x{frame_hw[1]}; drop --native or re-export with dynamic H/W"
            )
        return fixed
    h, w = frame_hw
    if native:
        return h, w
    (lo_h, lo_w), (hi_h, hi_w) = sizes.min_hw, sizes.max_hw
    scale = min(1.0, hi_h / h, hi_w / w)
    scale = max(scale, lo_h / h, lo_w / w)
    return max(lo_h, min(hi_h, round(h * scale))), max(lo_w, min(hi_w, round(w * scale)))


class Pipeline:
    def __init__(
        self,
        source: Source,
        backend: Backend,
        visualizer: Visualizer,
        sinks: Sequence[Sink],
        input_size: tuple[int, int] | None = None,
        native: bool = False,
        max_frames: int | None = None,
        draw_stats: bool = False,
        queue_size: int = 2,
        on_frame: Callable[[Frame, dict[str, np.ndarray]], None] | None = None,
        opencv_threads: int | None = 1,
        streams: int | None = None,
    ) -> None:
        self.source, self.backend, self.visualizer, self.sinks = source, backend, visualizer, list(sinks)
        self.card = backend.card
        self.input_size, self.native, self.max_frames = input_size, native, max_frames
        self.draw_stats = draw_stats
        self.on_frame = on_frame
        self.opencv_threads = opencv_threads  # None: leave OpenCV's pool as it is
        if streams is not None and streams < 1:
            raise FcnDeployError(f"--streams {streams}: must be 1 or more")
        self.streams_asked = streams  # None: auto_streams()
        self.streams = 1
        self._runner: Backend = backend
        self.stats = RunStats()
        self.signal_received: int | None = None
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._q_cap: Any = LatestQueue() if source.live else queue.Queue(queue_size)
        if source.live:
            queue_size = 1  # every queued frame ages by one inference: keep live latency near the minimum
        self._q_pre: queue.Queue = queue.Queue(queue_size)
        self._q_inf: queue.Queue = queue.Queue(queue_size)
        self._q_out: queue.Queue = queue.Queue(queue_size)
        self._sizes = backend.input_sizes
        self._want_scores = visualizer.spec.needs_scores

    # --- queue helpers that give up when the run stops --------------------------------------------------------
    def _put(self, q: Any, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: Any) -> Any:
        while not self._stop.is_set():
            try:
                return q.get(timeout=POLL_S)
            except queue.Empty:
                continue
        return _END

    def _worker(self, fn: Callable[[], None], out_q: Any = None) -> Callable[[], None]:
        """`fn` with its exception kept for run() to re-raise (and the pipeline stopped); a stage thread then
        passes END on to `out_q`."""

        def run() -> None:
            try:
                fn()
            except BaseException as e:  # re-raised on the main thread by run()
                self._errors.append(e)
                self._stop.set()
            finally:
                if out_q is not None:
                    self._put(out_q, _END)

        return run

    # --- stages -------------------------------------------------------------------------------------------
    def _capture(self) -> None:
        for n, frame in enumerate(self.source):
            if self._stop.is_set() or (
                self.max_frames is not None and not self.source.live and n >= self.max_frames
            ):
                break
            self.stats.add("capture", frame.capture_ms)
            if not self._put(self._q_cap, frame):
                break

    def _pre(self) -> None:
        while (frame := self._get(self._q_cap)) is not _END:
            t0 = time.perf_counter()
            hw = model_input_hw(frame.image.shape[:2], self._sizes, self.input_size, self.native)
            batch = preprocess(frame.image, self.card.normalization, hw)
            self.stats.add("pre", (time.perf_counter() - t0) * 1000)
            if not self._put(self._q_pre, (frame, batch)):
                return

    def auto_streams(self) -> int:
        """Two frames in flight for a file source on a machine with 2+ cores, else one (see the module doc)."""
        return 2 if not self.source.live and usable_cores() >= 2 else 1

    def _infer(self) -> None:
        """`streams` threads (this one included) run frames; with one stream the take/turn bookkeeping is
        uncontended."""
        take, order = threading.Lock(), threading.Condition()
        state = {"taken": 0, "turn": 0, "done": False}

        def stream() -> None:
            while not self._stop.is_set():
                with take:  # a frame's place in the output order is the order the streams took it in
                    if state["done"]:
                        return
                    item = self._get(self._q_pre)
                    if item is _END:
                        state["done"] = True
                        return
                    seq = state["taken"]
                    state["taken"] += 1
                frame, batch = item
                t0 = time.perf_counter()
                outputs = self._runner.run(batch)
                self.stats.add("infer", (time.perf_counter() - t0) * 1000)
                with order:
                    while state["turn"] != seq and not self._stop.is_set():
                        order.wait(POLL_S)
                if self._stop.is_set() or not self._put(self._q_inf, (frame, outputs)):
                    return
                with order:
                    state["turn"] += 1
                    order.notify_all()

        others = [threading.Thread(target=self._worker(stream), name=f"infer-{k}", daemon=True)
                  for k in range(1, self.streams)]  # fmt: skip
        for t in others:
            t.start()
        try:
            stream()
        except BaseException:
            self._stop.set()  # before the join: the other streams may be waiting for this one's turn
            raise
        finally:
            for t in others:
                t.join()

    def _post_draw(self) -> None:
        while (item := self._get(self._q_inf)) is not _END:
            frame, outputs = item
            t0 = time.perf_counter()
            labels = resize_labels(np.asarray(outputs["labels"][0]), frame.image.shape[:2])
            scores, is_probs = None, False
            if self._want_scores:
                is_probs = "probs" in outputs
                scores = (
                    outputs["probs" if is_probs else "logits"][0]
                    if (is_probs or "logits" in outputs)
                    else None
                )
            t1 = time.perf_counter()
            image = self.visualizer.render(frame.image, labels, scores, is_probs)
            if self.draw_stats:
                image = draw_stats_line(image, self.stats.live_fps(), self.stats.last_latency_ms())
            t2 = time.perf_counter()
            self.stats.add("post", (t1 - t0) * 1000)
            self.stats.add("draw", (t2 - t1) * 1000)
            if self.on_frame is not None:
                self.on_frame(frame, outputs)
            if not self._put(self._q_out, (frame, image, labels)):
                return

    # --- main thread: write, signals, shutdown --------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signal_received is not None:  # second Ctrl-C: the user insists
            raise KeyboardInterrupt
        self.signal_received = signum
        self._stop.set()
        self.source.close()

    def run(self) -> RunStats:
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        threads = [
            threading.Thread(target=self._worker(fn, q), name=name, daemon=True)
            for name, fn, q in (
                ("capture", self._capture, self._q_cap),
                ("pre", self._pre, self._q_pre),
                ("infer", self._infer, self._q_inf),
                ("post", self._post_draw, self._q_out),
            )
        ]
        self.stats = RunStats()
        self.streams = self.streams_asked or self.auto_streams()
        if self.streams > 1:
            runner = self.backend.concurrent(self.streams)
            if runner is None:
                log.debug("%s has no concurrent mode: one stream", self.backend.name)
                self.streams = 1
            else:
                self._runner = runner
        self.stats.streams = self.streams
        cv2 = import_cv2()
        opencv_before = cv2.getNumThreads()
        if self.opencv_threads is not None:
            cv2.setNumThreads(self.opencv_threads)
        try:
            for t in threads:
                t.start()
            self._write_loop()
        finally:
            self._stop.set()
            self.source.close()
            for t in threads:
                t.join(timeout=5)
            cv2.setNumThreads(opencv_before)
            if self._runner is not self.backend:
                self._runner.close()
                self._runner = self.backend
            self.stats.finished = time.perf_counter()
            try:
                for sink in self.sinks:
                    sink.close()
            finally:
                for sig, old in handlers.items():
                    signal.signal(sig, old)
            self._collect_counters()
        if self._errors:
            raise self._errors[0]
        self.stats.interrupted = self.signal_received is not None
        return self.stats

    def _write_loop(self) -> None:
        while (item := self._get(self._q_out)) is not _END:
            frame, image, labels = item
            t0 = time.perf_counter()
            for sink in self.sinks:
                sink.write(frame, image, labels)
            t1 = time.perf_counter()
            self.stats.add("write", (t1 - t0) * 1000)
            self.stats.frame_done((t1 - frame.captured) * 1000)
            if self.max_frames is not None and self.stats.frames >= self.max_frames:
                break
            if any(getattr(s, "quit_requested", False) for s in self.sinks):
                break

    def _collect_counters(self) -> None:
        src = self.source
        self.stats.dropped = src.dropped + getattr(self._q_cap, "dropped", 0)
        self.stats.skipped, self.stats.reconnects, self.stats.timeouts = (
            src.skipped,
            src.reconnects,
            src.timeouts,
        )


def model_only_fps(backend: Backend, batch: np.ndarray, runs: int, warmup: int = 2) -> float:
    """Frames per second of backend.run alone on one preprocessed batch (for pipeline efficiency)."""
    for _ in range(warmup):
        backend.run(batch)
    t0 = time.perf_counter()
    for _ in range(runs):
        backend.run(batch)
    return runs / (time.perf_counter() - t0)
