"""Where a plain INT8 lowering's loss comes from: weight rounding, activation clipping or activation rounding.

Lowers the FP32 model once (`quantize --int8`, the given --target, --method and --weight-bits; the float ends in
FP32 as always), then judges three graphs on the plan images (the --plan-images calibration images held out from
the ranges: what the guard and --auto judge on) with the one Judge (losses-only mean IoU drop, its 90% bootstrap
bound, the net drop, agreement):

  as_lowered       the INT8 graph
  weights_clamped  every activation Q/DQ pair replaced by the clamp to its quantized range (no rounding): weight
                   rounding plus activation clipping
  weights_only     every activation Q/DQ pair replaced by a ReLU where its range starts at 0, else removed: the
                   ONNX Runtime quantizer folds each ReLU into the uint8 Q that follows it, so a bare bypass
                   would drop the ReLUs too

So as_lowered - weights_clamped is what activation rounding costs, weights_clamped - weights_only activation
clipping, and weights_only what the 8- (or 7-) bit weights cost. Prints JSON.

    python benchmarks/int8_error_sources.py camvid.onnx --data-root data/camvid --size 180x240 \
        --target onnxruntime --method mse
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
from int8_transfer import model_and_data_args  # the same model / dataset / size arguments
from onnx import numpy_helper

from fcn_deploy.calibration.api import QuantizeConfig, quantize
from fcn_deploy.calibration.images import from_dataset
from fcn_deploy.calibration.ranges import METHODS
from fcn_deploy.calibration.sensitivity import Judge, PlanImages, split_for_plan
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.environment import fingerprint
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.shapes import parse_hw


def without_activation_rounding(model: onnx.ModelProto, clamp: bool) -> onnx.ModelProto:
    """Each activation QuantizeLinear -> DequantizeLinear pair (a Q not reading an initializer) becomes a Clip to
    the pair's representable range (clamp) or, without clamp, a Relu where that range starts at 0 (zero point at
    the type's minimum) and nothing otherwise."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    dead, alias = set(), {}
    for node in model.graph.node:
        q = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in values:
            continue
        scale, zero = float(values[q.input[1]]), values[q.input[2]]
        info = np.iinfo(zero.dtype)
        lo, hi = (info.min - float(zero)) * scale, (info.max - float(zero)) * scale
        dead.add(id(q))
        if clamp:
            bounds = [f"{node.name}_lo", f"{node.name}_hi"]
            model.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.float32), n)
                                           for v, n in zip((lo, hi), bounds, strict=True))  # fmt: skip
            node.op_type, node.domain = "Clip", ""
            node.input[:] = [q.input[0], *bounds]
        elif lo == 0.0:
            node.op_type, node.domain = "Relu", ""
            node.input[:] = [q.input[0]]
        else:
            dead.add(id(node))
            alias[node.output[0]] = q.input[0]
        del node.attribute[:]
    kept = [n for n in model.graph.node if id(n) not in dead]
    for n in kept:
        n.input[:] = [alias.get(i, i) for i in n.input]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    onnx.checker.check_model(model)
    return model


def main() -> None:
    ap = model_and_data_args(__doc__.splitlines()[0])
    ap.add_argument("--plan-images", type=int, default=32)
    ap.add_argument("--target", default="onnxruntime", choices=("tensorrt", "onnxruntime"))
    ap.add_argument("--method", default="mse", choices=METHODS)
    ap.add_argument("--weight-bits", type=int, choices=(7, 8))
    args = ap.parse_args()
    size = parse_hw(args.size, "--size")
    spec = f"{args.dataset}:train"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize(QuantizeConfig(model=args.onnx, precision="int8", target=args.target, output=out,
                                calib_dataset=spec, data_root=args.data_root, num_images=args.num_images,
                                method=args.method, weight_bits=args.weight_bits, calib_shapes=(size,),
                                plan_images=args.plan_images, eval_images=2, latency_runs=0,
                                max_drop=100.0))  # fmt: skip
        lowered = onnx.load(out)
    calib, _ = from_dataset(spec, args.data_root, args.num_images, 0, 0)  # quantize's selection (seed 0)
    _, plan = split_for_plan(calib, args.plan_images)
    card = ModelCard.from_onnx(onnx.load(args.onnx), str(args.onnx))
    judge = Judge(args.onnx, PlanImages(plan), size, card, "miou")
    graphs = {
        "as_lowered": lowered,
        "weights_clamped": without_activation_rounding(_copy(lowered), clamp=True),
        "weights_only": without_activation_rounding(_copy(lowered), clamp=False),
    }
    result = {"benchmark": "int8_error_sources", "model": str(args.onnx), "cpu": fingerprint()["cpu_model"],
              "cpu_flags": fingerprint()["cpu_flags"], "target": args.target, "method": args.method,
              "weight_bits": args.weight_bits, "size": list(size), "plan_images": len(plan),
              "miou_fp32": round(100 * judge.miou_fp32, 2), "rows": {}}  # fmt: skip
    for name, graph in graphs.items():
        m = judge.measure_model(graph)
        result["rows"][name] = {"losses_drop": round(m.drop, 3), "bound": round(m.judged, 3),
                                "net_drop": round(m.net, 3), "agreement_pct": round(100 * m.agreement, 3)}  # fmt: skip
    print(json.dumps(result, indent=1))


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


if __name__ == "__main__":
    try:
        main()
    except FcnDeployError as e:  # bad input: one line, no traceback
        raise SystemExit(f"error: {e}") from None
