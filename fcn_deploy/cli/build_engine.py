"""`fcn-deploy build-engine`: ONNX -> strongly typed TensorRT plan + `.engine.json` manifest.

Order: validate every input (exit 1/2), lower to FP16/INT8 if asked (kept with --keep-onnx; valid anywhere),
then stop with exit 3 if TensorRT or cuda-python is missing, and only then build.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

LOWERING_HELP = "As in `fcn-deploy quantize`; used when --int8/--fp16 lowers an FP32 ONNX first."


def _rebuild_command(model: Path, output: Path, precision_flag: str | None, profile, extra: list[str]) -> str:
    b = profile.batch
    args = ["fcn-deploy", "build-engine", str(model)]
    if precision_flag:
        args.append(precision_flag)
    args += [
        "--min-shape",
        f"{profile.min_hw[0]}x{profile.min_hw[1]}",
        "--opt-shape",
        f"{profile.opt_hw[0]}x{profile.opt_hw[1]}",
        "--max-shape",
        f"{profile.max_hw[0]}x{profile.max_hw[1]}",
        "--batch",
        f"{b[0]}:{b[1]}:{b[2]}",
        *extra,
        "--output",
        str(output),
    ]
    return shlex.join(args)


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
@click.option("--method", type=click.Choice(["entropy", "percentile", "minmax"]), help=LOWERING_HELP)
@click.option("--calib-shapes", help=LOWERING_HELP + " HxW[,HxW...]")
@click.option("--exclude", multiple=True, help=LOWERING_HELP)
@click.option("--calib-cache", type=click.Path(dir_okay=False, path_type=Path), help=LOWERING_HELP)
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
    import tempfile

    from fcn_deploy.core.atomic import sha256_file
    from fcn_deploy.core.card import ModelCard
    from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
    from fcn_deploy.core.onnx_io import load_onnx
    from fcn_deploy.core.shapes import parse_hw_list
    from fcn_deploy.engine import trt_compat
    from fcn_deploy.engine.build import BuildOptions, detect_precision, engine_from_onnx, lower_onnx
    from fcn_deploy.engine.profile_shapes import (
        check_against_onnx,
        onnx_input_dims,
        parse_workspace,
        profile_from_card,
    )

    if fp16 and int8:
        raise click.UsageError("--fp16 and --int8 are exclusive; pick one")
    given_calib = {k: v for k, v in calib.items() if v not in (None, ())}
    if given_calib and not (int8 or fp16):
        raise click.UsageError(
            f"--{next(iter(given_calib)).replace('_', '-')} only applies with --int8 or --fp16"
        )
    if "calib_shapes" in given_calib:
        given_calib["calib_shapes"] = tuple(parse_hw_list(given_calib["calib_shapes"], "--calib-shapes"))
    if keep_onnx and not (fp16 or int8):
        raise click.UsageError("--keep-onnx only applies with --fp16 or --int8")
    output = output or model.with_suffix(".engine")
    if output.resolve() == model.resolve() or (
        keep_onnx and keep_onnx.resolve() in (model.resolve(), output.resolve())
    ):
        raise click.UsageError("--output and --keep-onnx must differ from MODEL and from each other")
    workspace_bytes = parse_workspace(workspace) if workspace else None

    onnx_model = load_onnx(model)
    card = ModelCard.from_onnx(onnx_model, str(model))
    profile = profile_from_card(card, min_shape, opt_shape, max_shape, batch)
    check_against_onnx(profile, onnx_input_dims(onnx_model, card.input_name), str(model))
    current = card.precision if card.precision != "fp32" else detect_precision(onnx_model)
    wanted = "int8" if int8 else "fp16" if fp16 else current
    if current != "fp32" and wanted != current:
        raise FcnDeployError(
            f"{model} is already {current.upper()}; build it without --{wanted}, or pass the FP32 ONNX"
        )
    lower = wanted != current

    missing = None
    try:
        trt_compat.import_tensorrt()
        from fcn_deploy.engine.cuda_rt import device_info

        device_info(0)  # cuda-python present and a GPU visible (else exit 3, as for TensorRT)
    except MissingDependencyError as e:
        missing = e
    if missing is not None and not (lower and keep_onnx):
        raise MissingDependencyError(f"{missing}; no engine written")

    with tempfile.TemporaryDirectory(prefix="fcn-deploy-build-") as tmp:
        build_onnx, provenance = model, dict(card.provenance)
        if lower:
            build_onnx = lower_onnx(
                model, wanted, keep_onnx or Path(tmp) / f"{model.stem}.{wanted}.onnx", given_calib
            )
            card = ModelCard.from_onnx(load_onnx(build_onnx), str(build_onnx))
            provenance = {**card.provenance, "lowered_onnx_sha256": sha256_file(build_onnx)}
            if keep_onnx:
                click.echo(f"kept {wanted.upper()} ONNX: {keep_onnx}")
        if missing is not None:
            raise MissingDependencyError(
                f"{missing}; no engine written (the {wanted.upper()} ONNX is at {keep_onnx})"
            )
        options = BuildOptions(
            profile, workspace_bytes, timing_cache, dla_core, builder_optimization_level, version_compatible
        )
        extra = [
            f"--{k.replace('_', '-')}={v}"
            for k, v in (
                ("workspace", workspace),
                ("timing_cache", timing_cache),
                ("dla_core", dla_core),
                ("builder_optimization_level", builder_optimization_level),
            )
            if v is not None
        ]
        if version_compatible:
            extra.append("--version-compatible")
        for k, v in calib.items():
            for item in v if isinstance(v, tuple) else (v,):
                if item is not None and lower:
                    extra.append(f"--{k.replace('_', '-')}={item}")
        result = engine_from_onnx(
            build_onnx,
            output,
            options,
            card=card,
            precision=wanted,
            provenance=provenance,
            source_onnx=model,
            rebuild_command=_rebuild_command(model, output, f"--{wanted}" if lower else None, profile, extra),
        )
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    m = result.manifest
    click.echo(
        f"wrote {result.engine_path} ({m.engine_bytes} bytes, {m.precision}, TensorRT {m.tensorrt_version}, "
        f"{m.gpu_name} sm_{m.compute_capability[0]}{m.compute_capability[1]})"
    )
    click.echo(f"wrote {result.manifest_path}")
