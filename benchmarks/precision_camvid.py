"""FP32 vs INT8 (TensorRT and ONNX Runtime flavours) vs FP16 on CamVid, measured with ONNX Runtime on the CPU.

Calibrates on <= --num-images images of CamVid train (class-stratified, seeded), evaluates every lowered model on
all of CamVid val: mean IoU, pixel agreement with FP32, and CPU latency at 360x480 (median of --runs interleaved
runs against FP32). Prints one JSON object. Targets (issue 5): INT8 within 1.0 mean IoU of FP32, agreement >= 99%,
ORT INT8 latency <= 0.6x FP32.

    python benchmarks/precision_camvid.py runs/camvid/best.onnx --data-root ../shared/data/camvid
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from fcn_deploy.calibration.api import QuantizeConfig, quantize

RUNS = (
    ("int8", "tensorrt"),
    ("int8", "onnxruntime"),
    ("fp16", "tensorrt"),  # target does not apply to FP16
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx", type=Path, help="FP32 ONNX from `fcn-deploy export` (CamVid, 11 classes)")
    ap.add_argument("--data-root", type=Path, required=True, help="CamVid folder (train/, val/, ...annot/)")
    ap.add_argument("--num-images", type=int, default=300)
    ap.add_argument("--method", default="entropy", choices=["entropy", "percentile", "minmax"])
    ap.add_argument("--eval-images", type=int, default=None, help="val images to evaluate (default: all)")
    ap.add_argument("--runs", type=int, default=10, help="latency runs per model (median)")
    ap.add_argument("--latency-shape", default="360x480")
    ap.add_argument("--only", nargs="*", choices=["int8-tensorrt", "int8-onnxruntime", "fp16"],
                    help="subset of the lowered models")
    ap.add_argument("--exclude", nargs="*", default=(), help="node names / op types kept FP32 (INT8 runs)")
    ap.add_argument("--out-dir", type=Path, default=None, help="where lowered models go (default: beside ONNX)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    from fcn_deploy.core.shapes import parse_hw

    out_dir = args.out_dir or args.onnx.parent
    stem = args.onnx.name.removesuffix(".onnx")
    results, fp32 = [], {}
    for precision, target in RUNS:
        name = "fp16" if precision == "fp16" else f"int8-{target}"
        if args.only and name not in args.only:
            continue
        cfg = QuantizeConfig(
            model=args.onnx,
            precision=precision,
            target=target,
            output=out_dir / f"{stem}.{name}.onnx",
            calib_dataset="camvid:train",
            data_root=args.data_root,
            num_images=args.num_images,
            method=args.method,
            exclude=tuple(args.exclude) if precision == "int8" else (),
            cache=out_dir / f"{stem}.{precision}.calib.json",  # the two INT8 targets share their ranges
            eval_images=args.eval_images,
            latency_runs=args.runs,
            latency_shape=parse_hw(args.latency_shape),
        )
        t0 = time.perf_counter()
        s = quantize(cfg).summary
        seconds = time.perf_counter() - t0
        fp32 = {"mean_iou": s.get("miou_fp32"), "latency_ms": s.get("latency_ms_fp32")}
        results.append({
            "model": name,
            "method": s.get("method"),
            "calibration_images": s["num_images"],
            "cache_hit": s["cache_hit"],
            "eval_images": s["eval_images"],
            "mean_iou": s.get("miou_lowered"),
            "mean_iou_delta": s.get("miou_delta"),
            "pixel_agreement": s.get("pixel_agreement"),
            "latency_ms": s.get("latency_ms_lowered"),
            "latency_ms_fp32_same_run": s.get("latency_ms_fp32"),
            "latency_ratio": s.get("latency_ratio"),
            "kept_fp32_nodes": len(s.get("kept_fp32_nodes", [])),
            "seconds": round(seconds, 1),
            "file_bytes": Path(s["model"]).stat().st_size,
        })
    print(json.dumps({
        "benchmark": "precision_camvid",
        "onnx": str(args.onnx),
        "fp32_bytes": args.onnx.stat().st_size,
        "fp32": fp32,
        "latency_shape": args.latency_shape,
        "runs": args.runs,
        "machine_note": "ONNX Runtime CPU; latency ratios are interleaved runs, so shared load hits both alike",
        "results": results,
    }, indent=1))


if __name__ == "__main__":
    main()
