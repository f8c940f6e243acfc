"""`fcn-deploy quantize`: lower an FP32 ONNX to INT8 (explicit Q/DQ) or FP16, calibrated on real images."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fcn_deploy.calibration.api import WEIGHT_ROUNDINGS, QuantizeConfig, default_output
from fcn_deploy.calibration.int8 import TARGETS
from fcn_deploy.calibration.ranges import BEST, METHODS

METRICS = ("miou", "agreement")  # fcn_deploy.calibration.sensitivity.METRICS (not imported: --help stays light)

DEFAULTS = QuantizeConfig(model=Path("MODEL.onnx"), precision="int8")  # the library's defaults, shown in --help


def _triple(text: str | None, what: str) -> tuple[float, float, float] | None:
    from fcn_deploy.core.errors import FcnDeployError

    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise FcnDeployError(f"{what} {text!r}: expected three comma-separated numbers, e.g. 0.485,0.456,0.406")
    return values  # type: ignore[return-value]


@click.command("quantize")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--int8", "int8", is_flag=True, help="INT8 with explicit Q/DQ nodes.")
@click.option("--fp16", "fp16", is_flag=True, help="FP16 mixed precision (I/O stays FP32).")
@click.option("--calib-data", type=click.Path(path_type=Path), help="Folder of calibration images.")
@click.option("--calib-dataset", help="Dataset split for calibration, e.g. camvid or camvid:train.")
@click.option("--data-root", type=click.Path(path_type=Path), help="Where --calib-dataset lives.")
@click.option("--calib-video", type=click.Path(path_type=Path), help="Video whose frames calibrate.")
@click.option("--num-images", type=int, default=DEFAULTS.num_images, show_default=True, help="Calibration images (seeded pick).")
@click.option("--method", type=click.Choice((*METHODS, BEST)),
              help="INT8 activation range: KL-optimal clip, 99.99th percentile, max |x|, or best: the one whose INT8 "
                   "loses least on held-out calibration images.  [default: best with --auto, else entropy]")
@click.option("--calib-shapes", help="HxW[,HxW...] to calibrate at (default: the model card's opt shape).")
@click.option("--target", type=click.Choice(TARGETS), default=DEFAULTS.target, show_default=True,
              help="INT8 flavour: TensorRT's symmetric Q/DQ, or ORT CPU's fast uint8/int8 kernels.")
@click.option("--exclude", multiple=True, help="Node name or op type kept in FP32 (repeatable).")
@click.option("--cache", type=click.Path(path_type=Path), help="Calibration cache file (reused when it matches).")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Default: MODEL.int8.onnx / MODEL.fp16.onnx.")
@click.option("--mean", help="For an ONNX without model card: RGB mean in pixel/255 units, e.g. 0.485,0.456,0.406.")
@click.option("--std", help="For an ONNX without model card: RGB std in pixel/255 units.")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True, help="Seed of the image selection.")
@click.option("--eval-images", type=int, default=DEFAULTS.eval_images, show_default=True, help="Held-out images for the summary.")
@click.option("--fp16-max-activation", type=float, default=DEFAULTS.fp16_max_activation, show_default=True,
              help="FP16: nodes whose activations exceed this on calibration images stay FP32.")
@click.option("--auto", is_flag=True, help="INT8: measure each layer group's sensitivity and keep the fewest, "
              "cheapest groups in FP32 until the drop is within --max-drop.")
@click.option("--max-drop", type=float, help="INT8 budget in points (mean IoU x100, or 100 - pixel agreement %): "
              f"past it a warning (--strict: an error); --auto's target.  [default: {DEFAULTS.max_drop:g}]")
@click.option("--metric", type=click.Choice(METRICS),
              help="INT8 budget metric, of the guard and --auto (default: miou with masks, else agreement).")
@click.option("--plan-images", type=int, help="INT8: calibration images held out from the ranges to judge the "
              f"lowering (and the --auto plan).  [default: {DEFAULTS.plan_images}]")
@click.option("--weight-bits", type=click.IntRange(7, 8), help="INT8 --target onnxruntime weight bits "
              "[default: 8 on a CPU with avx512_vnni/avx_vnni/amx_int8, else 7: AVX2 U8S8 kernels saturate].")
@click.option("--weight-rounding", type=click.Choice(WEIGHT_ROUNDINGS), help="INT8 weights: gptq rounds each Conv "
              "for the least output error on calibration images, nearest to the nearest grid point.  [default: gptq with --auto, else nearest]")
@click.option("--strict", is_flag=True, help="INT8: an error (nothing written) instead of a warning past --max-drop.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def command(model, int8, fp16, calib_data, calib_dataset, data_root, calib_video, num_images, method, calib_shapes,
            target, exclude, cache, output, mean, std, seed, eval_images, fp16_max_activation, auto, max_drop, metric,
            plan_images, weight_bits, weight_rounding, strict, as_json) -> None:
    """Lower MODEL.onnx to INT8 or FP16, calibrated on real images, and write a JSON summary beside it."""
    from fcn_deploy.core.errors import FcnDeployError
    from fcn_deploy.core.shapes import parse_hw_list

    if int8 and fp16:
        raise FcnDeployError("--int8 and --fp16 exclude each other; pick one")
    precision = "int8" if int8 else "fp16" if fp16 else None
    if precision is None:
        raise FcnDeployError("choose a precision: --int8 or --fp16")
    int8_options = {"max_drop": max_drop, "metric": metric, "plan_images": plan_images, "weight_bits": weight_bits,
              "weight_rounding": weight_rounding, "strict": strict or None}
    int8_options = {k: v for k, v in int8_options.items() if v is not None}
    if precision != "int8" and (int8_options or auto):
        flag = "--auto" if auto else f"--{next(iter(int8_options)).replace('_', '-')}"
        raise FcnDeployError(f"{flag} applies to --int8 only; drop it or use --int8")
    from fcn_deploy.chain.artifact import replacements_only
    from fcn_deploy.chain.lowered import LoweredOnnx
    from fcn_deploy.core.paths import check_outputs

    output = output or default_output(model, precision)
    check_outputs(
        {"MODEL": model, "--calib-data": calib_data, "--calib-video": calib_video, "--data-root": data_root},
        {"--output": output, "summary (OUTPUT with .json)": output.with_suffix(".json"), "--cache": cache},
    )

    calibration = dict(
        calib_data=calib_data, calib_dataset=calib_dataset, data_root=data_root, calib_video=calib_video,
        num_images=num_images, method=method, exclude=tuple(exclude), cache=cache, mean=_triple(mean, "--mean"),
        std=_triple(std, "--std"), seed=seed, eval_images=eval_images, fp16_max_activation=fp16_max_activation,
        auto=auto, **int8_options,
        calib_shapes=tuple(parse_hw_list(calib_shapes, "--calib-shapes")) if calib_shapes else None,
    )  # fmt: skip
    # A command that names its output lowers again (reuse=False): it prints the summary of this calibration.
    step = LoweredOnnx(model, precision, output, target=target, calibration=calibration, reuse=False,
                       say=replacements_only())  # fmt: skip
    result = step().result
    s = result.summary
    if as_json:
        click.echo(json.dumps(s))
        return
    click.echo(f"wrote {result.output} ({s['precision']}"
               + (f", target {s['target']}, {s['method']}{': ' + s['method_chosen'] if 'method_chosen' in s else ''}, {s['weight_bits']}-bit weights ({s.get('weight_rounding', 'nearest')} rounding): {s['weight_bits_reason']}"
                  if s["precision"] == "int8" else "") + ")")
    click.echo(f"  calibration  {s['num_images']} images from {s['calibration_source']}"
               + (f" ({s['skipped_images']} corrupt skipped)" if s["skipped_images"] else "")
               + (" [cache hit]" if result.cache_hit else ""))
    plan = s.get("auto_plan")
    if plan:
        kept = f"{len(plan['kept_groups'])} group(s) in {plan['kept_precision'].upper()}"
        click.echo(f"  auto plan    {kept} ({', '.join(plan['kept_groups']) or 'none'}): "
                   f"{plan['metric']} drop {plan['full_int8']['drop']:.2f} -> {plan['final']['drop']:.2f} points "
                   f"(budget {plan['max_drop']:g}) on {plan['plan_images']} held-out calibration images")
    g = s.get("guard")
    if g and g.get("measured"):
        verdict = "within" if g["within_budget"] else "OVER"
        click.echo(f"  INT8 guard   {g['metric']} drop {g['drop']:.2f} points on {g['images']} held-out calibration "
                   f"images: {verdict} budget {g['max_drop']:g}")
    if s.get("kept_fp16_nodes"):
        click.echo(f"  kept FP16    {', '.join(s['kept_fp16_nodes'])}")
    if s.get("kept_fp32_nodes"):
        click.echo(f"  kept FP32    {', '.join(s['kept_fp32_nodes'])}")
    if "pixel_agreement" in s:
        where = "held-out" if s["held_out"] else "calibration (no held-out images)"
        click.echo(f"  agreement    {100 * s['pixel_agreement']:.2f}% of pixels vs FP32 on {s['eval_images']} "
                   f"{where} images")
    if "miou_fp32" in s:
        click.echo(f"  mean IoU     FP32 {100 * s['miou_fp32']:.2f}  {s['precision'].upper()} "
                   f"{100 * s['miou_lowered']:.2f}  ({100 * s['miou_delta']:+.2f})")
    if "latency_ratio" in s:
        click.echo(f"  ORT CPU      {s['latency_ms_lowered']:.1f} ms vs {s['latency_ms_fp32']:.1f} ms FP32 "
                   f"(x{s['latency_ratio']:.2f})")
    click.echo(f"  summary      {result.summary_path}")
