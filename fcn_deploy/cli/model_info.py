"""`fcn-deploy model-info`: parameter counts, multiply-adds, crop offsets and output size of one FCN build."""

from __future__ import annotations

import json

import click

from fcn_deploy.core.model_config import PADDINGS, VARIANTS, ModelConfig

DEFAULT = ModelConfig()


@click.command("model-info")
@click.option("--variant", type=click.Choice(VARIANTS), default=DEFAULT.variant, show_default=True)
@click.option("--num-classes", type=int, default=DEFAULT.num_classes, show_default=True)
@click.option("--width", type=float, default=DEFAULT.width, show_default=True, help="Trunk channel multiplier.")
@click.option("--padding", type=click.Choice(PADDINGS), default=DEFAULT.padding, show_default=True)
@click.option("--batch-norm", is_flag=True, help="Batch norm after every trunk convolution.")
@click.option("--learn-upsampling", is_flag=True, help="Count the bilinear upsampling kernels as learned.")
@click.option("--input-size", default="500x500", show_default=True, help="HxW for multiply-adds and output size.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(variant, num_classes, width, padding, batch_norm, learn_upsampling, input_size, as_json) -> None:
    """Describe an FCN build: parameters, multiply-adds and output size from a real forward pass."""
    from fcn_deploy.core.memory import check_fits
    from fcn_deploy.core.shapes import parse_hw

    hw = parse_hw(input_size, "--input-size")
    pad = 200 if padding == "paper" else 0  # the paper's pad=100 on the first conv
    # the forward pass holds a few first-block activations: 64 * width channels, float32, at the padded size
    check_fits(3 * 4 * max(1, 64 * width) * (hw[0] + pad) * (hw[1] + pad), f"--input-size {input_size}",
               "pick a smaller size; multiply-adds scale with H x W")  # fmt: skip
    config = ModelConfig(variant, num_classes, width, padding, batch_norm, learn_upsampling)
    import torch

    from fcn_deploy.training.fcn import build_model, count_macs

    model = build_model(config)
    with torch.no_grad():  # no autograd graph: the pass holds a layer's input and output, as check_fits assumes
        macs, out_hw = count_macs(model, hw)
    info = {
        "variant": variant,
        "num_classes": num_classes,
        "width": width,
        "padding": padding,
        "batch_norm": batch_norm,
        **model.parameter_counts(),
        "macs": macs,
        "input_size": list(hw),
        "output_size": list(out_hw),
        "crop_offsets": model.crop_offsets,
        "upsampling": [
            {"name": n, "kernel": m.kernel_size[0], "stride": m.stride[0], "padding": m.padding[0]}
            for n, m in model.upsamplers()
        ],
    }
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"{variant}  classes={num_classes}  width={width}  padding={padding}  batch_norm={batch_norm}")
    click.echo(f"  learned parameters  {info['params_learned']:,}")
    click.echo(f"  total parameters    {info['params_total']:,}  (incl. frozen bilinear upsampling)")
    click.echo(f"  multiply-adds       {macs / 1e9:.2f} G at {hw[0]}x{hw[1]}")
    click.echo(f"  output size         {out_hw[0]}x{out_hw[1]}")
    click.echo(f"  crop offsets        {info['crop_offsets']}")
