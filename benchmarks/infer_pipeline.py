"""Pipeline efficiency of `fcn-deploy infer`: end-to-end FPS / model-only FPS, same model, same machine, same run.

A 300-frame 480x360 video is generated, a narrow FCN-8s is exported with `fcn-deploy export` (untrained: speed
only), and the full pipeline (decode, preprocess, ONNX Runtime, overlay, mp4 encode) runs over it. Model-only FPS
is `backend.run` on one preprocessed frame, measured half before and half after the pipeline so that load drift
on a shared machine hits both numbers alike. Target: ratio >= 0.9 (the model is the bottleneck).

    python benchmarks/infer_pipeline.py [--frames 300] [--width 0.125] [--padding paper] [--threads N]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-c", "from fcn_deploy.cli import main; main()"]


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
           "--head", "labels", "--input-size", f"{hw[0]}x{hw[1]}", "-o", str(path)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"fcn-deploy export failed:\n{r.stderr}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", default="360x480", help="video HxW")
    ap.add_argument("--variant", default="fcn8s")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--padding", default="paper", choices=["paper", "same"])
    ap.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: ORT's choice)")
    ap.add_argument("--model-runs", type=int, default=40, help="model-only runs (half before, half after)")
    ap.add_argument("--model", type=Path, help="use this .onnx instead of exporting one")
    ap.add_argument("--workdir", type=Path, help="keep the video/model/output here (default: a temp folder)")
    args = ap.parse_args()

    from fcn_deploy.core.preprocess import preprocess
    from fcn_deploy.core.shapes import parse_hw
    from fcn_deploy.runtime.ort_backend import OrtBackend
    from fcn_deploy.runtime.pipeline import Pipeline, model_only_fps
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
        t0 = time.perf_counter()
        export_model(model, args.variant, args.width, args.padding, hw)
        print(f"exported {model} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    load_before = os.getloadavg()
    backend = OrtBackend(model, threads=args.threads)
    first = next(iter(VideoFileSource(video)))
    batch = preprocess(first.image, backend.card.normalization)
    half = max(1, args.model_runs // 2)
    fps_before = model_only_fps(backend, batch, half, warmup=3)

    source = VideoFileSource(video)
    out = work / "bench_out.mp4"
    vis = Visualizer(backend.card, VisualizeSpec.parse("overlay", backend.card))
    stats = Pipeline(source, backend, vis, [VideoSink(out, source.fps)], native=True).run()

    fps_after = model_only_fps(backend, batch, half, warmup=1)
    model_fps = 2 / (1 / fps_before + 1 / fps_after)  # harmonic mean: total runs / total time
    d = stats.to_dict()
    print(json.dumps({
        "benchmark": "infer_pipeline",
        "frames": d["frames"],
        "video_hw": list(hw),
        "model": {"variant": args.variant, "width": args.width, "padding": args.padding, "path": str(model)},
        "backend": backend.describe(),
        "ort_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "model_only_fps": round(model_fps, 3),
        "model_only_fps_before_after": [round(fps_before, 3), round(fps_after, 3)],
        "end_to_end_fps": d["fps"],
        "ratio": round(d["fps"] / model_fps, 3),
        "target_ratio": 0.9,
        # Load-drift-free companion: how busy the pipeline kept the model (1.0 = never waiting for other stages).
        "model_busy_fraction": round(d["fps"] * d["stage_ms"]["infer"]["mean"] / 1000, 3),
        "stage_ms_mean": {k: v["mean"] for k, v in d["stage_ms"].items()},
        "latency_ms": d["latency_ms"],
        "dropped": d["dropped"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
