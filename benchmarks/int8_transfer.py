"""Does an INT8 drop measured on calibration (train) images predict the drop on val? Net vs losses-only mean IoU.

Lowers the FP32 model once per --targets entry (plain INT8, `TARGET` or `onnxruntime:BITS`, calibrated on
--num-images train images), then scores FP32 and every lowering on all of the train and all of the val split with
the one score(), and prints per split and lowering: the net mean IoU drop, the losses-only drop (a pixel INT8
labels right where FP32 was wrong is scored as FP32 scored it: what calibration.sensitivity judges budgets on)
and the pixel agreement with FP32. This is the measurement behind that judge (README, "Measured INT8 plans").

    python benchmarks/int8_transfer.py camvid.onnx --data-root data/camvid --size 180x240 \
        --targets tensorrt onnxruntime:8 onnxruntime:7
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fcn_deploy.calibration.api import QuantizeConfig, quantize
from fcn_deploy.calibration.sensitivity import at_labels, losses_only_labels
from fcn_deploy.core.datasets import build_dataset
from fcn_deploy.core.environment import fingerprint
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.metrics import ConfusionMatrix, metrics_from_matrix
from fcn_deploy.core.scoring import score
from fcn_deploy.core.shapes import parse_hw
from fcn_deploy.runtime.ort_backend import OrtBackend


def miou(preds: list[np.ndarray], labels: list[np.ndarray], ds) -> float:
    cm = ConfusionMatrix(ds.num_classes, ds.ignore_index)
    for p, lab in zip(preds, labels, strict=True):
        cm.update(lab, p)
    return 100 * metrics_from_matrix(cm.matrix)["mean_iou"]


def model_and_data_args(description: str) -> argparse.ArgumentParser:
    """The arguments every CamVid INT8 study takes: the FP32 model, the dataset, the scoring size, the count."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("onnx", type=Path)
    ap.add_argument("--dataset", default="camvid")
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--size", default="180x240")
    ap.add_argument("--num-images", type=int, default=300)
    return ap


def main() -> None:
    ap = model_and_data_args(__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="+", default=["tensorrt", "onnxruntime"])
    args = ap.parse_args()
    size = parse_hw(args.size, "--size")
    models = {"fp32": args.onnx}
    for spec in args.targets:
        target, _, bits = spec.partition(":")
        out = args.onnx.with_name(f"{args.onnx.stem}.transfer-{target}{bits}.onnx")
        quantize(QuantizeConfig(model=args.onnx, precision="int8", target=target, output=out, eval_images=2,
                                calib_dataset=f"{args.dataset}:train", data_root=args.data_root, latency_runs=0,
                                num_images=args.num_images, weight_bits=int(bits) if bits else None))  # fmt: skip
        models[spec] = out
    result: dict = {"benchmark": "int8_transfer", "model": str(args.onnx), "cpu": fingerprint()["cpu_model"],
                    "cpu_flags": fingerprint()["cpu_flags"], "size": list(size), "rows": {}}  # fmt: skip
    for split in ("train", "val"):
        ds = build_dataset(args.dataset, str(args.data_root), split)
        labels = [ds[i][1] for i in range(len(ds))]

        preds = {}
        for k, path in models.items():
            with OrtBackend(path) as b:
                preds[k] = [at_labels(p, lab) for p, lab in
                            zip(score(b, ds, size, keep_predictions=True).predictions, labels, strict=True)]  # fmt: skip
        ref = preds.pop("fp32")
        base = miou(ref, labels, ds)
        for k, low in preds.items():
            losses = [losses_only_labels(lo, r, lab) for lo, r, lab in zip(low, ref, labels, strict=True)]
            agree = sum(int((a == b).sum()) for a, b in zip(low, ref, strict=True)) / sum(a.size for a in ref)
            result["rows"][f"{split}/{k}"] = {"images": len(ds), "miou_fp32": round(base, 2),
                                              "net_drop": round(base - miou(low, labels, ds), 3),
                                              "losses_only_drop": round(base - miou(losses, labels, ds), 3),
                                              "agreement_pct": round(100 * agree, 3)}  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    try:
        main()
    except FcnDeployError as e:  # bad input: one line, no traceback
        raise SystemExit(f"error: {e}") from None
