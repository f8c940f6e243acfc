"""`fcn-deploy profile`: latency statistics of one model on one backend, in trtexec's layout (and JSON)."""

from __future__ import annotations

import click

from fcn_deploy.chain.backends import BACKENDS, PRECISIONS
from fcn_deploy.profile import MIN_ITERATIONS, ProfileConfig

DEFAULTS = ProfileConfig()


@click.command("profile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto: by file type (.onnx ONNX Runtime, .engine TensorRT, .pt PyTorch); openvino runs a .onnx.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="[default: cuda for engines, else cpu]")
@click.option("--precision", type=click.Choice(PRECISIONS),
              help="Compute precision on the CPU [default: fp32; on OpenVINO an INT8 graph's float layers run bf16 "
                   "on AMX CPUs]: bf16 runs on OpenVINO (AVX512-BF16/AMX CPUs only).")  # fmt: skip
@click.option("--shape", help="Input HxW [default: the model's fixed size, else the model card's opt shape].")
@click.option("--batch", type=int, default=DEFAULTS.batch, show_default=True)
@click.option("--warmup-s", type=float, default=DEFAULTS.warmup_s, show_default=True,
              help="Warm-up seconds before timing.")
@click.option("--iterations", type=int, help="Time exactly N runs (instead of --duration).")
@click.option("--duration", type=float,
              help=f"Time runs for S seconds (at least {MIN_ITERATIONS} runs)  [default: {DEFAULTS.duration_s:g}]")
@click.option("--per-layer", is_flag=True, help="Per-layer times (TensorRT engines).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the result as JSON ('-': stdout).")
def command(model, backend, device, precision, shape, batch, warmup_s, iterations, duration, per_layer, json_out) -> None:
    """Time MODEL back to back: latency min/max/mean/median/p90/p95/p99, throughput, stability, environment."""
    import json

    from fcn_deploy.chain.backends import open_backend
    from fcn_deploy.core.atomic import write_text
    from fcn_deploy.core.errors import FcnDeployError
    from fcn_deploy.core.paths import check_outputs
    from fcn_deploy.core.shapes import parse_hw
    from fcn_deploy.profile import profile_backend

    if iterations is not None and duration is not None:
        raise FcnDeployError("give --iterations N or --duration S, not both")
    check_outputs({"MODEL": model}, {"--json": json_out})
    config = ProfileConfig(
        shape=parse_hw(shape, "--shape") if shape else None, batch=batch, warmup_s=warmup_s,
        iterations=iterations, duration_s=DEFAULTS.duration_s if duration is None else duration, per_layer=per_layer,
    )
    with open_backend(model, backend=backend, device=device, precision=precision) as runner:
        result = profile_backend(runner, config)
    if json_out == "-":
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(result.summary())
    if json_out:
        write_text(json_out, json.dumps(result.to_dict(), indent=2) + "\n")
        click.echo(f"wrote {json_out}")
