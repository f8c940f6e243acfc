"""`fcn-deploy build-engine`: ONNX -> strongly typed TensorRT plan + `.engine.json` manifest (fcn_deploy.chain).

Order: validate every input (exit 1/2), lower to FP16/INT8 if asked (kept with --keep-onnx; valid anywhere),
then stop with exit 3 if TensorRT or cuda-python is missing, and only then build.
"""

from __future__ import annotations

from pathlib import Path

import click

from fcn_deploy.calibration.ranges import BEST, METHODS

LOWERING_HELP = "As in `fcn-deploy quantize`; used when --int8/--fp16 lowers an FP32 ONNX first."


@click.command("build-engine")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fp16", "fp16", is_flag=True, help="FP16 engine: convert an FP32 ONNX to mixed FP16 first.")
@click.option(
    "--int8", "int8", is_flag=True, help="INT8 engine: calibrate and insert Q/DQ first (unless present)."
)
@click.option("--min-shape", help="Smallest input HxW (default: the model card's).")
@click.option("--opt-shape", help="HxW TensorRT tunes for; set it to your deployment size (default: card's).")
@click.option("--max-shape", help="Largest input HxW (default: the model card's).")
@click.option("--batch", help="Batch sizes MIN:OPT:MAX, or one number.  [default: 1:1:1]")
@click.option("--workspace", help="Builder workspace limit, e.g. 2G or 512M (default: TensorRT's).")
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read and update this timing cache file (speeds up rebuilds).",
)
@click.option(
    "--dla-core", type=click.IntRange(min=0), help="Build for this DLA core, GPU fallback on (Orin)."
)
@click.option("--builder-optimization-level", type=click.IntRange(0, 5), help="0-5; TensorRT's default is 3.")
@click.option(
    "--version-compatible",
    is_flag=True,
    help="Plan that newer TensorRT runtimes can load (embeds host code; off by default).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Engine path (default: MODEL with .engine; the manifest is OUTPUT.json).",
)
@click.option(
    "--keep-onnx",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also keep the FP16/INT8 ONNX that --fp16/--int8 produced, at this path.",
)
@click.option("--calib-data", type=click.Path(file_okay=False, path_type=Path), help=LOWERING_HELP)
@click.option("--calib-dataset", help=LOWERING_HELP)
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), help=LOWERING_HELP)
@click.option("--calib-video", type=click.Path(dir_okay=False, path_type=Path), help=LOWERING_HELP)
@click.option("--num-images", type=click.IntRange(min=1), help=LOWERING_HELP)
@click.option("--method", type=click.Choice((*METHODS, BEST)), help=LOWERING_HELP)
@click.option("--calib-shapes", help=LOWERING_HELP + " HxW[,HxW...]")
@click.option("--exclude", multiple=True, help=LOWERING_HELP)
@click.option("--calib-cache", type=click.Path(dir_okay=False, path_type=Path), help=LOWERING_HELP)
@click.option("--auto", is_flag=True, default=None, help=LOWERING_HELP + " (--int8: the measured FP32-group plan)")
@click.option("--max-drop", type=float, help=LOWERING_HELP + " (--int8 budget of the guard and --auto, points)")
@click.option("--metric", type=click.Choice(("miou", "agreement")), help=LOWERING_HELP + " (--int8 budget metric)")
@click.option("--plan-images", type=click.IntRange(min=1), help=LOWERING_HELP + " (--int8 held-out images)")
@click.option("--strict", is_flag=True, default=None, help=LOWERING_HELP + " (--int8: past --max-drop an error)")
def command(
    model,
    fp16,
    int8,
    min_shape,
    opt_shape,
    max_shape,
    batch,
    workspace,
    timing_cache,
    dla_core,
    builder_optimization_level,
    version_compatible,
    output,
    keep_onnx,
    **calib,
) -> None:
    """Build a strongly typed TensorRT engine (raw plan) and its manifest from an fcn-deploy ONNX model."""
    from fcn_deploy.chain.engine_plan import default_engine_path, engine_for_onnx
    from fcn_deploy.core.shapes import parse_hw_list

    if fp16 and int8:
        raise click.UsageError("--fp16 and --int8 are exclusive; pick one")
    given_calib = {k: v for k, v in calib.items() if v not in (None, ())}
    if given_calib and not (int8 or fp16):
        raise click.UsageError(f"--{next(iter(given_calib)).replace('_', '-')} only applies with --int8 or --fp16")
    int8_only = [k for k in ("auto", "max_drop", "metric", "plan_images", "strict") if k in given_calib]
    if fp16 and int8_only:
        raise click.UsageError(f"--{int8_only[0].replace('_', '-')} applies to --int8 only (the INT8 budget)")
    if "calib_shapes" in given_calib:
        given_calib["calib_shapes"] = tuple(parse_hw_list(given_calib["calib_shapes"], "--calib-shapes"))
    if "calib_cache" in given_calib:
        given_calib["cache"] = given_calib.pop("calib_cache")
    if keep_onnx and not (fp16 or int8):
        raise click.UsageError("--keep-onnx only applies with --fp16 or --int8")
    output = output or default_engine_path(model)
    if output.resolve() == model.resolve() or (
        keep_onnx and keep_onnx.resolve() in (model.resolve(), output.resolve())
    ):
        raise click.UsageError("--output and --keep-onnx must differ from MODEL and from each other")
    from fcn_deploy.core.paths import check_outputs

    check_outputs(
        {"MODEL": model, **{f"--{k.replace('_', '-')}": given_calib.get(k) for k in ("calib_data", "calib_video", "data_root")}},
        {"--output": output, "manifest (OUTPUT.json)": output.with_name(output.name + ".json"), "--keep-onnx": keep_onnx,
         "--calib-cache": given_calib.get("cache"), "--timing-cache": timing_cache},
    )  # fmt: skip

    # A command that names its engine builds it (reuse=False): the user asked for a fresh build.
    step = engine_for_onnx(
        model, output, precision="int8" if int8 else "fp16" if fp16 else None, min_shape=min_shape,
        opt_shape=opt_shape, max_shape=max_shape, batch=batch, workspace=workspace, timing_cache=timing_cache,
        dla_core=dla_core, builder_optimization_level=builder_optimization_level,
        version_compatible=version_compatible, keep_onnx=keep_onnx, calibration=given_calib, reuse=False,
        say=lambda text: click.echo(text.strip(), err=True),
    )  # fmt: skip
    result = step().result
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    m = result.manifest
    click.echo(
        f"wrote {result.engine_path} ({m.engine_bytes} bytes, {m.precision}, TensorRT {m.tensorrt_version}, "
        f"{m.gpu_name} sm_{m.compute_capability[0]}{m.compute_capability[1]})"
    )
    click.echo(f"wrote {result.manifest_path}")
