"""`fcn-deploy export`: a checkpoint (or an untrained FCN) -> a validated ONNX file with its model card inside."""

from __future__ import annotations

import json

import click

VARIANT_CHOICES = ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"]
HEAD_CHOICES = ["labels", "logits", "probs", "labels+probs"]


@click.command("export")
@click.option("--variant", type=click.Choice(VARIANT_CHOICES), default=None, help="Default fcn8s (or the checkpoint's).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="fcn-deploy training checkpoint.")
@click.option("--num-classes", type=int, default=None, help="Default 21 (or the checkpoint's).")
@click.option("--width", type=float, default=None, help="Trunk channel multiplier; default 1.0 (or the checkpoint's).")
@click.option("--padding", type=click.Choice(["paper", "same"]), default=None, help="Default paper (or the checkpoint's).")
@click.option("--output", "-o", type=click.Path(), default=None, help="Default: CHECKPOINT.onnx, else VARIANT.onnx.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (13..20).")
@click.option("--dynamic", default="batch,height,width", show_default=True, help="Axes left symbolic.")
@click.option("--static", "static", default=None, metavar="HxW", help="Fixed batch 1 and HxW instead of --dynamic.")
@click.option("--input-size", default=None, metavar="HxW", help="Trace size and opt shape [training res or 360x480].")
@click.option("--min-shape", default=None, metavar="HxW", help="Recommended minimum input [32x32].")
@click.option("--max-shape", default=None, metavar="HxW", help="Recommended maximum input [1088x1920].")
@click.option("--head", type=click.Choice(HEAD_CHOICES), default="labels", show_default=True,
              help="labels: int32 class map (ArgMax in the graph); logits/probs: class scores; labels+probs: both.")  # fmt: skip
@click.option("--upsample", type=click.Choice(["deconv", "resize"]), default="deconv", show_default=True,
              help="resize: fixed bilinear deconvs as exact Pad+Resize+Slice (TensorRT INT8 friendly).")  # fmt: skip
@click.option("--simplify/--no-simplify", default=True, show_default=True, help="Simplify the graph with onnxslim.")
@click.option("--check-sizes", default=None, metavar="HxW,...", help="Parity check sizes [opt, half, odd].")
@click.option("--json", "as_json", is_flag=True, help="Print the export report as one JSON object.")
def command(
    variant, checkpoint, num_classes, width, padding, output, opset, dynamic, static, input_size, min_shape,
    max_shape, head, upsample, simplify, check_sizes, as_json,
) -> None:  # fmt: skip
    """Export an FCN to ONNX (dynamic H/W, model card inside), validated against PyTorch before it is written."""
    from pathlib import Path

    from fcn_deploy.core.errors import FcnDeployError
    from fcn_deploy.core.shapes import format_hw, parse_hw, parse_hw_list

    def hw(text, what):
        return parse_hw(text, what) if text is not None else None

    dynamic_axes = tuple(a.strip() for a in dynamic.split(",") if a.strip())
    static_hw = hw(static, "--static")
    if static_hw and dynamic != "batch,height,width":
        raise FcnDeployError("--static and --dynamic exclude each other; give one of them")
    sizes = tuple(parse_hw_list(check_sizes, "--check-sizes")) if check_sizes else None

    from fcn_deploy.export import ExportOptions, export_onnx, model_for_export

    options = ExportOptions(
        head=head, upsample=upsample, opset=opset, dynamic=dynamic_axes, static_shape=static_hw,
        opt_shape=hw(input_size, "--input-size"), min_shape=hw(min_shape, "--min-shape"),
        max_shape=hw(max_shape, "--max-shape"), simplify=simplify, check_sizes=sizes,
    )  # fmt: skip
    if output is None:
        output = str(Path(checkpoint).with_suffix(".onnx")) if checkpoint else f"{variant or 'fcn8s'}.onnx"
    model, card, trained = model_for_export(checkpoint, variant, num_classes, width, padding)
    if not trained:
        click.echo(
            "WARNING: no --checkpoint: exporting an UNTRAINED model (random score layers); its predictions are "
            "meaningless. Use it for pipeline and speed work only.",
            err=True,
        )
    report = export_onnx(model, card, output, options)
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
