"""`fcn-deploy infer`: segment a camera, stream, video, image, folder or glob; show, save and time the results."""

from __future__ import annotations

import json
import logging

import click

from fcn_deploy.chain.backends import BACKENDS, DEVICES, PRECISIONS

log = logging.getLogger("fcn_deploy.infer")


@click.command("infer")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--camera", help="Camera index (V4L2), or csi://N for a Jetson CSI camera.")
@click.option("--source", help="Video file, image, folder, glob ('frames/*.png') or rtsp:// / http:// URL.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto",
              show_default=True, help="auto: by file type (.engine/.plan, .onnx, .pt/.pth); openvino runs a .onnx.")  # fmt: skip
@click.option(
    "--device", type=click.Choice(DEVICES), help="Default: cuda for engines, cpu otherwise."
)
@click.option("--precision", type=click.Choice(PRECISIONS),
              help="Compute precision on the CPU [default: fp32; on OpenVINO an INT8 graph's float layers run bf16 "
                   "on AMX CPUs]: bf16 runs on OpenVINO (AVX512-BF16/AMX CPUs only).")  # fmt: skip
@click.option("--input-size", help="Network input HxW (frames are resized; labels resized back).")
@click.option("--native", is_flag=True, help="Run at each frame's own size.")
@click.option("--output", type=click.Path(), help="Video (.mp4/.avi/.mkv), image (.png/.jpg) or folder.")
@click.option("--display/--headless", default=None, help="Show a window (default: when a display exists).")
@click.option("--visualize", default="overlay", show_default=True,
              help="overlay, mask, side-by-side or heatmap:CLASS (a class name or index).")  # fmt: skip
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Overlay opacity.")
@click.option("--legend", is_flag=True, help="Draw a legend of the classes present.")
@click.option("--save-labels", type=click.Path(file_okay=False), help="Folder for raw label PNGs.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after N frames.")
@click.option("--streams", type=click.IntRange(min=1),
              help="Frames in the runtime at once. Default: 2 for a file source on 2+ cores where the backend "
                   "runs concurrently (ONNX Runtime on the CPU: more FPS, more latency), 1 for a live one.")  # fmt: skip
@click.option("--stats", "show_stats", is_flag=True, help="Draw FPS/latency on frames; print stats as JSON.")
@click.option("--open-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds to wait for a camera/stream to open.")  # fmt: skip
@click.option("--read-timeout", type=click.FloatRange(min=0.05), default=2.0, show_default=True,
              help="Seconds without a frame before a live source counts as down.")  # fmt: skip
@click.option("--max-reconnects", type=click.IntRange(min=0), default=5, show_default=True,
              help="Reconnect attempts (back-off 0.5, 1, 2 ... 10 s) before giving up with exit 2.")  # fmt: skip
@click.option(
    "--trust-engine", is_flag=True, help="Run a TensorRT engine whose manifest is missing or differs."
)
@click.pass_context
def command(ctx, model, camera, source, backend, device, precision, input_size, native, output, display, visualize, alpha,
            legend, save_labels, max_frames, streams, show_stats, open_timeout, read_timeout, max_reconnects,
            trust_engine) -> None:  # fmt: skip
    """Segment live or recorded images with MODEL (.engine, .onnx or .pt) and show/save overlays."""
    from fcn_deploy.chain.backends import open_backend
    from fcn_deploy.core.errors import FcnDeployError
    from fcn_deploy.core.paths import check_outputs, source_input
    from fcn_deploy.core.shapes import parse_hw
    from fcn_deploy.runtime import sinks as sk
    from fcn_deploy.runtime.pipeline import Pipeline
    from fcn_deploy.runtime.sources.files import ImageFilesSource
    from fcn_deploy.runtime.sources.opening import camera_source, open_source
    from fcn_deploy.runtime.visualize import Visualizer, VisualizeSpec

    if (camera is None) == (source is None):
        raise FcnDeployError("give exactly one of --camera N (or csi://N) and --source PATH_URL_OR_GLOB")
    if input_size and native:
        raise FcnDeployError("--input-size and --native exclude each other; pick one")
    size = parse_hw(input_size, "--input-size") if input_size else None
    check_outputs(
        {"MODEL": model, "--source": source_input(source)}, {"--output": output, "--save-labels": save_labels}
    )

    net = open_backend(model, backend, device, trust_engine, precision=precision)
    try:
        card = net.card
        if size is not None:
            net.input_sizes.check(size, f"--input-size {input_size}")
        spec = VisualizeSpec.parse(visualize, card, alpha, legend)
        if spec.needs_scores and not net.output_kinds:
            raise FcnDeployError(
                f"--visualize {visualize}: {model} outputs only labels, a heat map needs class scores; "
                "re-export with a logits or probs output"
            )
        live_kw = {
            "open_timeout_s": open_timeout,
            "read_timeout_s": read_timeout,
            "max_reconnects": max_reconnects,
        }
        src = camera_source(str(camera), **live_kw) if camera is not None else open_source(source, **live_kw)

        outputs: list[sk.Sink] = []
        try:
            if output:
                single = isinstance(src, ImageFilesSource) and len(src.paths) == 1
                outputs.append(sk.output_sink(output, lambda: src.fps, single))
            if save_labels:
                outputs.append(sk.LabelSink(save_labels, card.num_classes))
            if display or (display is None and sk.display_available() and (src.live or not outputs)):
                outputs.append(sk.DisplaySink(f"fcn-deploy: {src.name}"))
        except BaseException:
            for s in outputs:
                s.close()
            src.close()
            raise
        if not outputs:
            log.info("no --output, --save-labels or display: frames are processed and timed only")

        pipeline = Pipeline(src, net, Visualizer(card, spec), outputs, size, native, max_frames, show_stats,
                            streams=streams)
        stats = pipeline.run()
    finally:
        net.close()

    click.echo(stats.summary_line(), err=True)
    if show_stats:
        click.echo(json.dumps({"model": str(model), "source": src.name, **stats.to_dict()}))
    if pipeline.signal_received is not None:
        ctx.exit(128 + int(pipeline.signal_received))
