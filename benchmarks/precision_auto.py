"""Plain INT8 vs `--auto` INT8 (both targets) vs FP16 vs FP32, measured with ONNX Runtime on the CPU.

Calibrates on <= --num-images images of the calibration split (the --auto plan holds --plan-images of them out of
the range fitting to judge itself), then scores every model on the evaluation split with the one score() over
OrtBackends: mean IoU, pixel agreement with FP32, CPU latency ratio to FP32 (median of --runs interleaved runs
at --latency-shape, all models in the same loop; with --openvino each graph also on OpenVINO's CPU plugin at FP32
inference precision, in the same loop, as a ratio to ONNX Runtime's FP32), and which nodes stayed FP32. Prints one
JSON object with the machine's fingerprint (CPU model, VNNI/AMX flags). Timings are noisy on a shared 2-core machine.

    python benchmarks/precision_auto.py runs/syn/best.onnx --dataset synthetic --max-drop 0.5
    python benchmarks/precision_auto.py camvid.onnx --dataset camvid --data-root ../shared/data/camvid --max-drop 0.1
    python benchmarks/precision_auto.py camvid.onnx ... --weight-bits 7 8   # plain ORT INT8 with 7- and 8-bit weights
    python benchmarks/precision_auto.py camvid.onnx ... --openvino          # + every graph's latency on OpenVINO
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import time
from pathlib import Path

import numpy as np

from fcn_deploy.calibration.api import QuantizeConfig, quantize
from fcn_deploy.calibration.summary import latency_ms
from fcn_deploy.core.datasets import build_dataset
from fcn_deploy.core.environment import fingerprint
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.metrics import pixel_agreement
from fcn_deploy.core.scoring import score
from fcn_deploy.core.shapes import parse_hw
from fcn_deploy.runtime.ort_backend import OrtBackend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx", type=Path, help="FP32 ONNX from `fcn-deploy export` (with its model card)")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--data-root", type=Path)
    ap.add_argument("--calib-split", default="train")
    ap.add_argument("--eval-split", default="val")
    ap.add_argument("--num-images", type=int, default=300)
    ap.add_argument("--plan-images", type=int, default=32)
    ap.add_argument("--method", default=None, choices=["entropy", "percentile", "minmax", "best"],
                    help="calibration method (default: quantize's: best for --auto rows, entropy for plain INT8)")
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--metric", default=None, choices=["miou", "agreement"])
    ap.add_argument("--eval-images", type=int, default=None, help="evaluation images (default: all)")
    ap.add_argument("--size", default=None, help="network HxW for scoring (default: the card's opt shape)")
    ap.add_argument("--latency-shape", default=None, help="HxW for latency (default: --size)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--targets", nargs="*", default=["tensorrt", "onnxruntime"])
    ap.add_argument("--no-fp16", action="store_true")
    ap.add_argument("--weight-bits", type=int, nargs="*", choices=[7, 8], default=None,
                    help="plain --target onnxruntime INT8 once per value, rows int8-onnxruntime-wN (default: one row, "
                         "the bits this CPU's flags choose)")
    ap.add_argument("--weight-rounding", nargs="+", choices=["gptq", "nearest"], default=[None],
                    help="every INT8 row once per value, rows ...-gptq / ...-nearest, for a same-run A/B (default: "
                         "one row each, quantize's default: gptq with --auto, else nearest)")
    ap.add_argument("--openvino", action="store_true",
                    help="also time every graph on OpenVINO (what --backend auto runs INT8 graphs on; needs openvino)")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.openvino and importlib.util.find_spec("openvino") is None:  # before minutes of lowering, not after
        raise FcnDeployError("--openvino: the openvino wheel is not installed; pip install 'fcn-deploy[cpu]'")

    out_dir = args.out_dir or args.onnx.parent
    stem = args.onnx.name.removesuffix(".onnx")
    with OrtBackend(args.onnx) as ref:
        card = ref.card
    size = parse_hw(args.size, "--size") if args.size else tuple(card.opt_shape)
    common = dict(calib_dataset=f"{args.dataset}:{args.calib_split}", data_root=args.data_root,
                  num_images=args.num_images, method=args.method, calib_shapes=(size,), eval_images=4, latency_runs=0)
    models: dict[str, dict] = {}
    refused: dict[str, str] = {}
    for target in args.targets:
        for auto in (False, True):
            per_bits = args.weight_bits if target == "onnxruntime" and not auto and args.weight_bits else [None]
            for bits, rounding in ((b, r) for b in per_bits for r in args.weight_rounding):
                name = (f"int8-{target}" + ("-auto" if auto else "") + (f"-w{bits}" if bits else "")
                        + (f"-{rounding}" if rounding else ""))  # fmt: skip
                t0 = time.perf_counter()
                cfg = QuantizeConfig(model=args.onnx, precision="int8", target=target,
                                     output=out_dir / f"{stem}.{name}.onnx", auto=auto, max_drop=args.max_drop,
                                     metric=args.metric, plan_images=args.plan_images, weight_bits=bits,
                                     weight_rounding=rounding, **common)  # fmt: skip
                try:
                    r = quantize(cfg)
                except FcnDeployError as e:  # no plan within the budget: recorded, not fatal to the benchmark
                    refused[name] = str(e)
                    continue
                plan = r.summary.get("auto_plan")
                models[name] = {"path": r.output, "seconds_to_lower": time.perf_counter() - t0,
                                "kept_fp32_nodes": r.summary["kept_fp32_nodes"],
                                "weight_bits": r.summary.get("weight_bits"),
                                "weight_rounding": r.summary.get("weight_rounding"),
                                "method": r.summary["method"], "method_chosen": r.summary.get("method_chosen"),
                                "plan": None if plan is None else {k: plan[k] for k in (
                                    "metric", "max_drop", "plan_images", "full_int8", "final", "kept_groups",
                                    "kept_precision", "kept_latency_share", "evaluations")}}  # fmt: skip
                if plan:
                    models[name]["plan"]["top_sensitivity"] = [
                        {k: s[k] for k in ("group", "sensitivity", "gain_in_fp32", "latency_share")}
                        for s in plan["sensitivity"][:5]]  # fmt: skip
    if not args.no_fp16:
        t0 = time.perf_counter()
        r = quantize(QuantizeConfig(model=args.onnx, precision="fp16", output=out_dir / f"{stem}.fp16.onnx", **common))
        models["fp16"] = {"path": r.output, "seconds_to_lower": time.perf_counter() - t0,
                          "kept_fp32_nodes": r.summary["kept_fp32_nodes"], "plan": None}

    ds = build_dataset(args.dataset, str(args.data_root) if args.data_root else None, args.eval_split)
    indices = range(min(len(ds), args.eval_images or len(ds)))
    backends = {"fp32": OrtBackend(args.onnx), **{k: OrtBackend(v["path"]) for k, v in models.items()}}
    scores = {k: score(b, ds, size, indices=indices, keep_predictions=True) for k, b in backends.items()}
    ref_pred = scores["fp32"].predictions
    pixels = sum(a.size for a in ref_pred)
    lat_hw = parse_hw(args.latency_shape, "--latency-shape") if args.latency_shape else size
    batch = np.random.default_rng(0).standard_normal((1, 3, *lat_hw), np.float32)
    names = list(backends)
    timed = [backends[n] for n in names]
    if args.openvino:
        from fcn_deploy.runtime.openvino_backend import OpenVinoBackend

        ov = {n: OpenVinoBackend(models[n]["path"] if n in models else args.onnx) for n in names}
        timed += list(ov.values())
    measured = latency_ms(timed, batch, args.runs)
    times = dict(zip(names, measured[: len(names)], strict=True))
    ov_times = dict(zip(names, measured[len(names):], strict=True)) if args.openvino else {}
    rows = {}
    for name in names:
        m = scores[name].metrics
        agree = sum(pixel_agreement(a, b) * a.size for a, b in zip(ref_pred, scores[name].predictions, strict=True))
        rows[name] = {
            "mean_iou": m["mean_iou"], "miou_delta_points": 100 * (m["mean_iou"] - scores["fp32"].metrics["mean_iou"]),
            "pixel_agreement": agree / pixels, "latency_ms": times[name], "latency_ratio": times[name] / times["fp32"],
            **({"openvino_latency_ms": ov_times[name], "openvino_latency_ratio": ov_times[name] / times["fp32"]}
               if ov_times else {}),
            **({k: v for k, v in models[name].items() if k != "path"} if name in models else {}),
        }  # fmt: skip
    for b in timed:
        b.close()
    print(json.dumps({
        "benchmark": "precision_auto", "model": str(args.onnx), "dataset": args.dataset,
        "calibration": f"{args.dataset}:{args.calib_split}", "num_images": args.num_images,
        "evaluation": f"{args.dataset}:{args.eval_split}", "eval_images": len(indices), "size": list(size),
        "latency_shape": list(lat_hw), "latency_runs": args.runs, "max_drop": args.max_drop, "metric": args.metric,
        "method": args.method, "rows": rows, "refused": refused, "environment": fingerprint(),
        "note": "CPU timings on a shared 2-core machine with other engineers' jobs running: noisy; compare ratios",
    }, indent=1, default=str))  # fmt: skip


if __name__ == "__main__":
    try:
        main()
    except FcnDeployError as e:  # bad input (a missing model or data root, no openvino for --openvino): one line
        raise SystemExit(f"error: {e}") from None
