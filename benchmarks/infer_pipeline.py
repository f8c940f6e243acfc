"""Pipeline efficiency of `fcn-deploy infer`: end-to-end FPS / model-only FPS, same model, same machine, same run.

A 480x360 video is generated with OpenCV, a narrow FCN-8s is exported with `fcn-deploy export` (untrained: speed
only), and the full pipeline (decode, preprocess, the runtime, overlay, mp4 encode) runs over it. Model-only FPS
is `backend.run` on one preprocessed frame of that video. Every pipeline run is sandwiched between two model-only
measurements and compared with their geometric mean (the variant order rotating over rounds), so that the drift
of a shared VM's speed, which moved model-only FPS by 30% between neighbouring rounds, hits both sides alike;
the result is the median over runs of that ratio, and the ratio of the medians. Target: >= 0.95.

Pipeline variants (`--variants`, the thread-budget A/B): `ours` (the pipeline as `infer` runs it: two 1-thread
streams for this file source where the backend has them), `one_stream` (one run at a time on every core) and
`opencv_default` (OpenCV's own pool left at its default size instead of one thread).

Model-only FPS is the backend's own run() one call at a time, what `fcn-deploy profile` reports and the target is
stated against; `model_only_streams_fps` is the stricter reference for `ours`: the same streams the pipeline uses
running the model alone, two threads calling at once (`ratio_to_streams_*`).

Load-independent companions (CPU seconds, user + system, of the whole process): per frame in the pipeline over
per run of model-only; and the pipeline's own cost, the same pipeline over the video with a replay backend that
returns the real model's outputs without computing (decode, preprocess, overlay, encode, queues). On a machine
the model alone saturates, the ratio cannot exceed model CPU / (model CPU + the pipeline's own CPU).

    python benchmarks/infer_pipeline.py [--rounds 5] [--frames 120] [--width 0.125] [--backend onnxruntime]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-c", "from fcn_deploy.cli import main; main()"]
# Pipeline keyword arguments
VARIANTS = {"ours": {}, "one_stream": {"streams": 1}, "opencv_default": {"opencv_threads": None}}
TARGET = 0.95


def make_video(path: Path, frames: int, hw: tuple[int, int], fps: float = 30.0) -> None:
    """Moving coloured rectangles on a gradient: cheap to generate, not trivially compressible."""
    import cv2

    h, w = hw
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    base = np.zeros((h, w, 3), np.uint8)
    base[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    base[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    rng = np.random.default_rng(0)
    boxes = rng.integers(0, [w - 80, h - 60, 255, 255, 255], size=(6, 5))
    for i in range(frames):
        img = base.copy()
        for k, (x, y, b, g, r) in enumerate(boxes):
            dx = int((x + i * (k + 1) * 2) % (w - 80))
            img[y : y + 60, dx : dx + 80] = (b, g, r)
        writer.write(img)
    writer.release()


def export_model(path: Path, variant: str, width: float, padding: str, hw: tuple[int, int]) -> None:
    cmd = [*CLI, "export", "--variant", variant, "--width", str(width), "--padding", padding, "--num-classes", "11",
           "--head", "labels", "--input-size", f"{hw[0]}x{hw[1]}", "--check-sizes", f"{hw[0]}x{hw[1]}",
           "-o", str(path)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"fcn-deploy export failed:\n{r.stderr}")


def steal_jiffies() -> int | None:
    """Host steal time of this VM in clock ticks (1/100 s), None where /proc/stat has none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8])
    except (OSError, IndexError, ValueError):
        return None


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=120, help="video length = frames per pipeline run")
    ap.add_argument("--model-runs", type=int, default=30, help="model-only runs per round")
    ap.add_argument("--size", default="360x480", help="video HxW")
    ap.add_argument("--variant", default="fcn8s")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--padding", default="paper", choices=["paper", "same"])
    ap.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "openvino"])
    ap.add_argument(
        "--variants", default="ours,one_stream", help=f"pipeline variants: {', '.join(VARIANTS)}"
    )
    ap.add_argument("--model", type=Path, help="use this .onnx instead of exporting one")
    ap.add_argument("--workdir", type=Path, help="keep the video/model/output here (default: a temp folder)")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or set(variants) - set(VARIANTS):
        raise SystemExit(f"--variants: choose from {', '.join(VARIANTS)}")

    from fcn_deploy.core.backend import Backend
    from fcn_deploy.core.environment import fingerprint
    from fcn_deploy.core.preprocess import preprocess
    from fcn_deploy.core.shapes import parse_hw
    from fcn_deploy.runtime.pipeline import Pipeline
    from fcn_deploy.runtime.sinks import VideoSink
    from fcn_deploy.runtime.sources.files import VideoFileSource
    from fcn_deploy.runtime.visualize import Visualizer, VisualizeSpec

    hw = parse_hw(args.size)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fcn-infer-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    video = work / f"bench_{args.frames}_{hw[0]}x{hw[1]}.avi"
    if not video.exists():
        make_video(video, args.frames, hw)
    model = args.model or work / f"{args.variant}_w{args.width}_{args.padding}.onnx"
    if not model.exists():
        export_model(model, args.variant, args.width, args.padding, hw)

    if args.backend == "openvino":
        from fcn_deploy.runtime.openvino_backend import OpenVinoBackend

        backend = OpenVinoBackend(model, cache_root=work / "ov-cache")
    else:
        from fcn_deploy.runtime.ort_backend import OrtBackend

        backend = OrtBackend(model)
    first = next(iter(VideoFileSource(video)))
    batch = preprocess(first.image, backend.card.normalization)
    vis = Visualizer(backend.card, VisualizeSpec.parse("overlay", backend.card))
    for _ in range(3):
        backend.run(batch)

    def model_only() -> tuple[float, float]:
        c0, t0 = cpu_s(), time.perf_counter()
        for _ in range(args.model_runs):
            backend.run(batch)
        return args.model_runs / (time.perf_counter() - t0), (cpu_s() - c0) / args.model_runs

    streams_backend = backend.concurrent(2)

    def model_only_streams() -> float | None:
        """FPS of two threads calling the concurrent backend at once, model only."""
        if streams_backend is None:
            return None
        per = args.model_runs // 2

        def calls() -> None:
            for _ in range(per):
                streams_backend.run(batch)

        threads = [threading.Thread(target=calls) for _ in range(2)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return 2 * per / (time.perf_counter() - t0)

    def pipeline(name: str) -> tuple[float, float, float, dict]:
        source = VideoFileSource(video)
        sink = VideoSink(work / f"out_{name}.mp4", source.fps)
        c0 = cpu_s()
        stats = Pipeline(source, backend, vis, [sink], native=True, **VARIANTS[name]).run()
        return stats.fps(), stats.steady_fps(), (cpu_s() - c0) / max(stats.frames, 1), stats.to_dict()

    outputs = backend.run(batch)

    class Replay(Backend):
        """The real model's outputs for the first frame, returned without computing: the pipeline's own cost."""

        name, card = "replay", backend.card

        def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
            return {k: v.copy() for k, v in outputs.items()}

    def pipeline_own() -> tuple[float, float]:
        source = VideoFileSource(video)
        sink = VideoSink(work / "out_replay.mp4", source.fps)
        c0 = cpu_s()
        stats = Pipeline(source, Replay(), vis, [sink], native=True).run()
        return stats.fps(), (cpu_s() - c0) / max(stats.frames, 1)

    env = fingerprint()
    load_before = [round(v, 2) for v in os.getloadavg()]
    pipeline(variants[0])  # warm-up: codec libraries, the writer, page cache of the video
    model_fps, model_cpu = [], []
    around: dict[str, list[float]] = {v: [] for v in variants}  # model-only FPS just before and after each run
    e2e: dict[str, list[float]] = {v: [] for v in variants}
    steady: dict[str, list[float]] = {v: [] for v in variants}
    e2e_cpu: dict[str, list[float]] = {v: [] for v in variants}
    last: dict[str, dict] = {}
    own_fps, own_cpu = [], []
    streams_fps: list[float] = []
    model_only_streams()  # warm-up
    steal0, t_start = steal_jiffies(), time.perf_counter()

    def measure_model() -> float:
        fps, cpu = model_only()
        model_fps.append(fps)
        model_cpu.append(cpu)
        return fps

    for r in range(args.rounds):
        fps, cpu = pipeline_own()
        own_fps.append(fps)
        own_cpu.append(cpu)
        before = measure_model()
        if (fps := model_only_streams()) is not None:
            streams_fps.append(fps)
        for name in variants[r % len(variants) :] + variants[: r % len(variants)]:
            fps, fps_steady, cpu, last[name] = pipeline(name)
            after = measure_model()
            around[name].append(math.sqrt(before * after))
            e2e[name].append(fps)
            steady[name].append(fps_steady)
            e2e_cpu[name].append(cpu)
            before = after
    steal_end = steal_jiffies()
    steal = None if steal0 is None or steal_end is None else steal_end - steal0

    out: dict = {
        "benchmark": "infer_pipeline",
        "cpu_model": env["cpu_model"],
        "cpu_flags": env["cpu_flags"],
        "cpu_count": env["cpu_count"],
        "loadavg_before": load_before,
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "video": {"path": str(video), "frames": args.frames, "hw": list(hw)},
        "model": {"variant": args.variant, "width": args.width, "padding": args.padding, "path": str(model)},
        "backend": backend.describe(),
        "rounds": args.rounds,
        "model_runs_per_round": args.model_runs,
        # The hypervisor's steal (/proc/stat) over the measurements, as a share of both cores' time: how much of
        # the run-to-run spread another tenant explains.
        "host_steal_share": round(steal / max(1e-9, (time.perf_counter() - t_start) * os.cpu_count() * 100), 4)
        if steal is not None else None,
        "model_only_fps": [round(v, 3) for v in model_fps],
        "model_only_streams_fps": [round(v, 3) for v in streams_fps],
        "model_only_cpu_ms_per_frame": round(1000 * statistics.median(model_cpu), 2),
        "pipeline_own_cpu_ms_per_frame": round(1000 * statistics.median(own_cpu), 2),
        "pipeline_own_fps": round(statistics.median(own_fps), 1),
        "ratio_ceiling_when_the_model_saturates_the_cpu": round(
            statistics.median(model_cpu) / (statistics.median(model_cpu) + statistics.median(own_cpu)), 3
        ),
        "target_ratio": TARGET,
        "variants": {},
    }
    for name in variants:
        ratios = [a / b for a, b in zip(e2e[name], around[name], strict=True)]
        steady_ratios = [a / b for a, b in zip(steady[name], around[name], strict=True)]
        d = last[name]
        out["variants"][name] = {
            "pipeline_kwargs": VARIANTS[name],
            "end_to_end_fps": [round(v, 3) for v in e2e[name]],
            "ratio_per_round": [round(v, 3) for v in ratios],
            "ratio_median": round(statistics.median(ratios), 3),
            "ratio_pooled": round(statistics.median(e2e[name]) / statistics.median(around[name]), 3),
            # Without the first frame's trip through every stage and the shutdown (fps() counts them).
            "steady_ratio_median": round(statistics.median(steady_ratios), 3),
            "streams": d.get("streams", 1),
            "ratio_to_streams_pooled": round(statistics.median(e2e[name]) / statistics.median(streams_fps), 3)
            if streams_fps else None,
            "cpu_ms_per_frame": round(1000 * statistics.median(e2e_cpu[name]), 2),
            "cpu_per_frame_over_model_only": round(statistics.median(e2e_cpu[name]) / statistics.median(model_cpu), 3),
            "last_round": {"stage_ms_mean": {k: v["mean"] for k, v in d["stage_ms"].items()},
                           "latency_ms": d["latency_ms"], "dropped": d["dropped"], "frames": d["frames"],
                           "model_busy_fraction": round(d["fps"] * d["stage_ms"]["infer"]["mean"] / 1000, 3)},
        }  # fmt: skip
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
