"""`fcn-deploy package`: a Triton model repository or a DeepStream nvinfer package for an fcn-deploy model."""

from __future__ import annotations

import click

from fcn_deploy.serving.repository import BACKENDS, KINDS, TritonOptions

DEFAULT = TritonOptions()
FORMATS = ("triton", "deepstream")


def _ints(text: str | None, what: str) -> tuple[int, ...]:
    from fcn_deploy.core.errors import FcnDeployError

    if not text:
        return ()
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise FcnDeployError(f"{what} {text!r}: give comma-separated integers, e.g. 2,4") from None


@click.command("package")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="triton", show_default=True)
@click.option("--output", "-o", required=True, type=click.Path(), help="The repository (triton) or folder to write.")
@click.option("--name", help="Model name in the repository (default: the file name's stem).")
@click.option("--backend", type=click.Choice(BACKENDS), default=DEFAULT.backend, show_default=True,
              help="auto: onnxruntime_onnx / tensorrt_plan by file type; python: the ONNX through fcn-deploy's "
                   "ONNX Runtime backend inside Triton's Python backend (CPU-only servers).")  # fmt: skip
@click.option("--with-preprocess/--no-preprocess", default=DEFAULT.with_preprocess, show_default=True,
              help="Add NAME_preprocess (JPEG/PNG bytes or uint8 frames in) and the NAME_ensemble chaining it.")  # fmt: skip
@click.option("--max-batch-size", type=int, default=DEFAULT.max_batch_size, show_default=True,
              help="At most the engine profile's max batch for engines.")  # fmt: skip
@click.option("--preferred-batch-sizes", help="Dynamic batching's preferred sizes, e.g. 4,8 (default: powers of 2).")
@click.option("--max-queue-delay-us", type=int, default=DEFAULT.max_queue_delay_us, show_default=True)
@click.option("--dynamic-batching/--no-dynamic-batching", default=DEFAULT.dynamic_batching, show_default=True)
@click.option("--instance-kind", type=click.Choice(KINDS), default=DEFAULT.kind, show_default=True,
              help="auto: KIND_CPU for --backend python, KIND_GPU otherwise.")  # fmt: skip
@click.option("--instances", type=int, default=DEFAULT.instances, show_default=True, help="Instances per group.")
@click.option("--gpus", help="GPU ids for KIND_GPU instances, e.g. 0,1.")
@click.option("--serve-sizes", help="HxW list the server warms up for (batching merges equal sizes only); "
                                    "default: the card's opt shape. deepstream: the one fixed HxW.")  # fmt: skip
@click.option("--intra-op-threads", type=int, default=0, help="--backend python: ONNX Runtime threads (0: default).")
@click.option("--batch-size", type=int, default=4, show_default=True, help="deepstream: streams per batch.")
@click.option("--sources", default="file:///opt/nvidia/deepstream/deepstream/samples/streams/sample_720p.mp4",
              show_default=True, help="deepstream: comma-separated file:// or rtsp:// URIs for deepstream-app.")  # fmt: skip
@click.option("--force", is_flag=True, help="Replace an existing, non-empty --output.")
def command(models, fmt, output, name, backend, with_preprocess, max_batch_size, preferred_batch_sizes,
            max_queue_delay_us, dynamic_batching, instance_kind, instances, gpus, serve_sizes, intra_op_threads,
            batch_size, sources, force) -> None:  # fmt: skip
    """Package MODEL(S) for serving: a Triton repository (one .onnx, or engines of one ONNX for several GPUs) or a
    DeepStream nvinfer package (one .onnx)."""
    from fcn_deploy.core.shapes import parse_hw_list

    sizes = tuple(parse_hw_list(serve_sizes, "--serve-sizes")) if serve_sizes else ()
    if fmt == "deepstream":
        from fcn_deploy.core.errors import FcnDeployError
        from fcn_deploy.serving.deepstream import package_deepstream

        if len(models) != 1:
            raise FcnDeployError("--format deepstream takes one .onnx (nvinfer builds its own engine)")
        if len(sizes) > 1:
            raise FcnDeployError("--format deepstream: nvinfer runs one fixed HxW; give one --serve-sizes")
        out = package_deepstream(models[0], output, size=sizes[0] if sizes else None, batch_size=batch_size,
                                 sources=[s for s in sources.split(",") if s], name=name, force=force)  # fmt: skip
        click.echo(f"wrote {out}")
        return
    from fcn_deploy.serving.repository import package_triton

    options = TritonOptions(
        name=name, backend=backend, max_batch_size=max_batch_size,
        preferred_batch_sizes=_ints(preferred_batch_sizes, "--preferred-batch-sizes"),
        max_queue_delay_us=max_queue_delay_us, dynamic_batching=dynamic_batching, kind=instance_kind,
        instances=instances, gpus=_ints(gpus, "--gpus"), serve_sizes=sizes, with_preprocess=with_preprocess,
        intra_op_threads=intra_op_threads,
    )  # fmt: skip
    out = package_triton(list(models), output, options, force=force)
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    click.echo(f"wrote {out}: models {', '.join(names)} (config.pbtxt checked against Triton's protobuf)")
