"""`fcn-deploy export`: a checkpoint (or an untrained FCN) -> a validated ONNX file with its model card inside."""

from __future__ import annotations

import json

import click

from fcn_deploy.core.model_config import PADDINGS, VARIANTS
from fcn_deploy.core.shapes import DEFAULT_SHAPES, format_hw
from fcn_deploy.export.options import (
    DEFAULT_DYNAMIC,
    DEFAULT_HEAD,
    DEFAULT_OPSET,
    DEFAULT_UPSAMPLE,
    HEADS,
    OPSET_RANGE,
    UPSAMPLE_MODES,
)

DYNAMIC = ",".join(DEFAULT_DYNAMIC)


@click.command("export")
@click.option("--variant", type=click.Choice(VARIANTS), default=None, help="Default fcn8s (or the checkpoint's).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="fcn-deploy training checkpoint.")
@click.option("--num-classes", type=int, default=None, help="Default 21 (or the checkpoint's).")
@click.option("--width", type=float, default=None, help="Trunk channel multiplier; default 1.0 (or the checkpoint's).")
@click.option("--padding", type=click.Choice(PADDINGS), default=None, help="Default paper (or the checkpoint's).")
@click.option("--output", "-o", type=click.Path(), default=None, help="Default: CHECKPOINT.onnx, else VARIANT.onnx.")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True,
              help=f"ONNX opset ({OPSET_RANGE[0]}..{OPSET_RANGE[1]}).")
@click.option("--dynamic", default=DYNAMIC, show_default=True, help="Axes left symbolic.")
@click.option("--static", "static", default=None, metavar="HxW", help="Fixed batch 1 and HxW instead of --dynamic.")
@click.option("--input-size", default=None, metavar="HxW", help="Trace size and opt shape [training res or 360x480].")
@click.option("--min-shape", default=None, metavar="HxW", help=f"Recommended minimum input [{format_hw(DEFAULT_SHAPES.min_hw)}].")
@click.option("--max-shape", default=None, metavar="HxW", help=f"Recommended maximum input [{format_hw(DEFAULT_SHAPES.max_hw)}].")
@click.option("--head", type=click.Choice(HEADS), default=DEFAULT_HEAD, show_default=True,
              help="labels: int32 class map (ArgMax in the graph); logits/probs: class scores; labels+probs: both.")  # fmt: skip
@click.option("--upsample", type=click.Choice(UPSAMPLE_MODES), default=DEFAULT_UPSAMPLE, show_default=True,
              help="The fixed bilinear deconvs as an exact other form: matmul (two MatMuls per upsampling, fastest on "
                   "the CPU runtimes), resize (Pad+Resize+Slice, TensorRT INT8 friendly); auto: matmul where exact "
                   "(fixed kernels), else deconv.")  # fmt: skip
@click.option("--simplify/--no-simplify", default=True, show_default=True, help="Simplify the graph with onnxslim.")
@click.option("--check-sizes", default=None, metavar="HxW,...", help="Parity check sizes [opt, half, odd].")
@click.option("--json", "as_json", is_flag=True, help="Print the export report as one JSON object.")
def command(
    variant, checkpoint, num_classes, width, padding, output, opset, dynamic, static, input_size, min_shape,
    max_shape, head, upsample, simplify, check_sizes, as_json,
) -> None:  # fmt: skip
    """Export an FCN to ONNX (dynamic H/W, model card inside), validated against PyTorch before it is written."""
    from pathlib import Path

    from fcn_deploy.chain.artifact import replacements_only
    from fcn_deploy.chain.onnx import OnnxFromCheckpoint
    from fcn_deploy.core.errors import FcnDeployError
    from fcn_deploy.core.paths import check_outputs
    from fcn_deploy.core.shapes import parse_hw, parse_hw_list
    from fcn_deploy.export.options import ExportOptions

    def hw(text, what):
        return parse_hw(text, what) if text is not None else None

    dynamic_axes = tuple(a.strip() for a in dynamic.split(",") if a.strip())
    static_hw = hw(static, "--static")
    if static_hw and dynamic != DYNAMIC:
        raise FcnDeployError("--static and --dynamic exclude each other; give one of them")
    sizes = tuple(parse_hw_list(check_sizes, "--check-sizes")) if check_sizes else None
    options = ExportOptions(
        head=head, upsample=upsample, opset=opset, dynamic=dynamic_axes, static_shape=static_hw,
        opt_shape=hw(input_size, "--input-size"), min_shape=hw(min_shape, "--min-shape"),
        max_shape=hw(max_shape, "--max-shape"), simplify=simplify, check_sizes=sizes,
    )  # fmt: skip
    if output is None:
        output = str(Path(checkpoint).with_suffix(".onnx")) if checkpoint else f"{variant or 'fcn8s'}.onnx"
    check_outputs({"--checkpoint": checkpoint}, {"--output": output})
    architecture = {"variant": variant, "num_classes": num_classes, "width": width, "padding": padding}
    if checkpoint is None:
        click.echo(
            "WARNING: no --checkpoint: exporting an UNTRAINED model (random score layers); its predictions are "
            "meaningless. Use it for pipeline and speed work only.",
            err=True,
        )
    # A command that names its output exports it again (reuse=False): it prints the parity checks it ran.
    step = OnnxFromCheckpoint(checkpoint, Path(output), options, architecture=architecture, reuse=False,
                              say=replacements_only())  # fmt: skip
    report = step().result
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    c = report.card
    click.echo(f"wrote {report.output}  ({report.size_bytes / 1e6:.1f} MB, sha256 {report.sha256[:16]}...)")
    click.echo(
        f"  {c.variant} width={c.width} padding={c.padding} classes={c.num_classes} opset={opset} "
        f"upsample={c.upsample} outputs={', '.join(f'{o.name}({o.kind})' for o in c.outputs)}"
    )
    click.echo(
        f"  shapes min/opt/max {format_hw(c.min_shape)} / {format_hw(c.opt_shape)} / {format_hw(c.max_shape)}"
        f"  dynamic: {', '.join(c.provenance['dynamic']) or 'none (static)'}"
    )
    for r in report.parity:
        click.echo(f"  ONNX Runtime vs PyTorch {r.line()}")
