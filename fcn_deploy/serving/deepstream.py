"""`fcn-deploy package --format deepstream`: an nvinfer package for many cameras, with no custom C++.

DeepStream's built-in segmentation parser takes FP32 scores and argmaxes them on the host (about 174 MB per 1080p
frame for 21 classes); its shipped `NvDsInferParseCustomPeopleSemSegNet` (libnvds_infercustomparser.so) instead
copies an INT32/INT64 class map named `argmax_1`, H x W x 1. So the package holds:
  NAME.ds.onnx                     fixed H x W, any batch, output `argmax_1` int32 [N, H, W, 1]
  config_infer_primary_NAME.txt    nvinfer [property] (keys from gstnvinfer_property_parser.h, DS 9.2)
  labels.txt                       one class per line
  deepstream_app_NAME.txt          a minimal deepstream-app config: N sources -> streammux -> nvinfer -> segvisual
nvinfer normalises as y = net-scale-factor * (x - offsets) with one scalar factor; the card's per-channel std is
folded into the ONNX (a Mul before the network), so net-scale-factor=1 and offsets=mean/scale give the card's
normalisation (up to float32 rounding).
DeepStream itself cannot run here: the tests check the keys against the documented set and the ONNX against the
labels head with ONNX Runtime at batch 1 to 4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.shapes import HW, format_hw
from fcn_deploy.serving.repository import default_name
from fcn_deploy.serving.staging import refuse_nonempty, staged_folder

OUTPUT = "argmax_1"
PARSER = "NvDsInferParseCustomPeopleSemSegNet"
PARSER_LIB = "/opt/nvidia/deepstream/deepstream/lib/libnvds_infercustomparser.so"
SAMPLE_STREAM = "file:///opt/nvidia/deepstream/deepstream/samples/streams/sample_720p.mp4"  # ships with DeepStream
# The nvinfer [property] keys (NVIDIA/DeepStream src/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.h, DS 9.2).
NVINFER_KEYS = frozenset("""
gie-unique-id process-mode interval labelfile-path gpu-id secondary-reinfer-interval output-tensor-meta
disable-output-host-copy auto-inc-mem max-gpu-mem-per enable-dla use-dla-core dump-input-tensor dump-output-tensor
overwrite-input-tensor overwrite-output-tensor ip-tensor-file op-tensor-files raw-output-file-write batch-size
tensor-meta-pool-size network-mode model-engine-file int8-calib-file workspace-size output-blob-names is-classifier
network-type force-implicit-batch-dim infer-dims output-io-formats layer-device-precision model-color-format
net-scale-factor offsets mean-file maintain-aspect-ratio symmetric-padding scaling-filter scaling-compute-hw
network-input-order input-tensor-from-meta custom-lib-path parse-bbox-func-name parse-bbox-instance-mask-func-name
parse-segmentation-func-name engine-create-func-name parse-classifier-func-name custom-network-config model-file
proto-file uff-file uff-input-order input-dims uff-input-dims uff-input-blob-name tlt-encoded-model tlt-model-key
onnx-file num-detected-classes enable-dbscan cluster-mode crop-objects-to-roi-boundary strongly-typed
dynamic-properties warmup-engine stabilize-buffer-count classifier-type classifier-threshold classifier-async-mode
segmentation-threshold segmentation-output-order output-instance-mask input-object-min-width
input-object-min-height input-object-max-width input-object-max-height operate-on-gie-id operate-on-class-ids
filter-out-class-ids
""".split())
# deepstream-app groups and the keys this package writes (DeepStream's deepstream-app configuration reference and
# src/apps/common/src/deepstream_segvisual_bin.c for [segvisual]).
APP_KEYS = {
    "application": {"enable-perf-measurement", "perf-measurement-interval-sec"},
    "tiled-display": {"enable", "rows", "columns", "width", "height", "gpu-id"},
    "source": {"enable", "type", "uri", "num-sources", "gpu-id", "latency"},
    "streammux": {"gpu-id", "live-source", "batch-size", "batched-push-timeout", "width", "height",
                  "enable-padding"},  # fmt: skip
    "primary-gie": {"enable", "gpu-id", "batch-size", "gie-unique-id", "config-file", "nvbuf-memory-type"},
    "segvisual": {"enable", "gpu-id", "batch-size", "width", "height", "original-background"},
    "osd": {"enable", "gpu-id"},
    "sink": {"enable", "type", "sync", "gpu-id"},
}
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}


def deepstream_onnx(model: Any, card: ModelCard, hw: HW) -> Any:
    """The fcn-deploy ONNX -> fixed H x W, dynamic batch, input y = x - mean/scale (per channel; the std folded
    in), output argmax_1 int32 [N, H, W, 1]; the other outputs are dropped."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    labels = card.output("labels")
    scores = card.output("probs") or card.output("logits")
    outputs = {o.name: o for o in g.output}
    names = {n for node in g.node for n in node.output} | {i.name for i in g.input} | {i.name for i in g.initializer}
    if OUTPUT in names:
        raise FcnDeployError(f"the graph already has a tensor named {OUTPUT!r}; cannot add DeepStream's output")
    new_nodes = []
    if labels is not None and labels.name in outputs:
        src, rank = labels.name, len(outputs[labels.name].type.tensor_type.shape.dim)
        cast = f"{OUTPUT}__int32"
        new_nodes.append(helper.make_node("Cast", [src], [cast], to=TensorProto.INT32))
        if rank == 3:
            axes = helper.make_tensor(f"{OUTPUT}__axes", TensorProto.INT64, [1], [3])
            g.initializer.append(axes)
            new_nodes.append(helper.make_node("Unsqueeze", [cast, axes.name], [OUTPUT]))
        elif rank == 4:  # N x 1 x H x W
            new_nodes.append(helper.make_node("Transpose", [cast], [OUTPUT], perm=[0, 2, 3, 1]))
        else:
            raise FcnDeployError(f"labels output {src!r} has rank {rank}; expected N x H x W")
    elif scores is not None and scores.name in outputs:
        am = f"{OUTPUT}__argmax"
        new_nodes += [
            helper.make_node("ArgMax", [scores.name], [am], axis=1, keepdims=1),
            helper.make_node("Cast", [am], [am + "_i32"], to=TensorProto.INT32),
            helper.make_node("Transpose", [am + "_i32"], [OUTPUT], perm=[0, 2, 3, 1]),
        ]
    else:
        raise FcnDeployError("the model has no labels, probs or logits output; re-export it with `fcn-deploy export`")
    g.node.extend(new_nodes)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.INT32, ["batch", hw[0], hw[1], 1]))

    # Input: nvinfer feeds x - offsets (net-scale-factor 1); multiply by scale/std per channel inside the graph.
    norm = card.normalization
    k = (np.float32(norm.scale) / np.asarray(norm.std, np.float32)).reshape(1, 3, 1, 1).astype(np.float32)
    inp = next(i for i in g.input if i.name == card.input_name)
    feed = f"{card.input_name}__deepstream"
    for node in g.node:
        node.input[:] = [feed if n == card.input_name else n for n in node.input]
    g.initializer.append(numpy_helper.from_array(k, f"{card.input_name}__scale"))
    g.node.insert(0, helper.make_node("Mul", [card.input_name, f"{card.input_name}__scale"], [feed]))
    dims = inp.type.tensor_type.shape.dim
    dims[0].Clear()
    dims[0].dim_param = "batch"
    for d, v in zip(dims[2:], hw, strict=True):
        d.Clear()
        d.dim_value = int(v)
    del g.value_info[:]
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m, full_check=True)
    return m


def offsets(card: ModelCard) -> list[float]:
    """nvinfer's offsets (pixel units, model channel order): y = x - offsets, then the graph's Mul by scale/std."""
    return [float(mu) / card.normalization.scale for mu in card.normalization.mean]


def nvinfer_config(name: str, card: ModelCard, hw: HW, batch_size: int) -> dict[str, Any]:
    mode = NETWORK_MODES.get(card.precision, 0)
    return {
        "gpu-id": 0,
        "gie-unique-id": 1,
        "onnx-file": f"{name}.ds.onnx",
        "model-engine-file": f"{name}.ds.onnx_b{batch_size}_gpu0_{card.precision if card.precision in NETWORK_MODES else 'fp32'}.engine",
        "labelfile-path": "labels.txt",
        "infer-dims": f"3;{hw[0]};{hw[1]}",
        "batch-size": batch_size,
        "network-mode": mode,
        "strongly-typed": 1,  # the ONNX decides precision (FP16 / Q/DQ INT8 lowered by fcn-deploy)
        "network-type": 2,
        "net-scale-factor": 1.0,
        "offsets": ";".join(f"{v:.6f}" for v in offsets(card)),
        "model-color-format": 0 if card.normalization.channel_order == "RGB" else 1,
        "maintain-aspect-ratio": 0,
        "num-detected-classes": card.num_classes,
        "output-blob-names": OUTPUT,
        "segmentation-threshold": 0.0,
        "parse-segmentation-func-name": PARSER,
        "custom-lib-path": PARSER_LIB,
    }


def app_config(name: str, hw: HW, batch_size: int, sources: list[str]) -> list[tuple[str, dict[str, Any]]]:
    if not sources:
        raise FcnDeployError("--sources: give at least one file:// or rtsp:// URI")
    for s in sources:
        if not s.startswith(("file://", "rtsp://")):
            raise FcnDeployError(f"--sources {s!r}: give file:///path or rtsp://host/stream URIs")
    n = len(sources)
    cols = int(np.ceil(np.sqrt(n)))
    groups: list[tuple[str, dict[str, Any]]] = [
        ("application", {"enable-perf-measurement": 1, "perf-measurement-interval-sec": 5}),
        ("tiled-display", {"enable": 1, "rows": int(np.ceil(n / cols)), "columns": cols,
                           "width": 1280, "height": 720, "gpu-id": 0}),  # fmt: skip
    ]
    live = any(s.startswith("rtsp://") for s in sources)
    for i, uri in enumerate(sources):
        groups.append((f"source{i}", {"enable": 1, "type": 4 if uri.startswith("rtsp://") else 3, "uri": uri,
                                      "num-sources": 1, "gpu-id": 0}))  # fmt: skip
    groups += [
        ("streammux", {"gpu-id": 0, "live-source": int(live), "batch-size": min(batch_size, n) if n else batch_size,
                       "batched-push-timeout": 40000, "width": hw[1], "height": hw[0]}),  # fmt: skip
        ("primary-gie", {"enable": 1, "gpu-id": 0, "batch-size": batch_size, "gie-unique-id": 1,
                         "config-file": f"config_infer_primary_{name}.txt"}),  # fmt: skip
        ("segvisual", {"enable": 1, "gpu-id": 0, "batch-size": batch_size, "width": hw[1], "height": hw[0]}),
        ("osd", {"enable": 0, "gpu-id": 0}),
        ("sink0", {"enable": 1, "type": 2, "sync": 0, "gpu-id": 0}),
    ]
    return groups


def render_ini(groups: list[tuple[str, dict[str, Any]]], header: str) -> str:
    lines = [f"# {line}" for line in header.splitlines()]
    for group, keys in groups:
        lines += ["", f"[{group}]", *(f"{k}={v}" for k, v in keys.items())]
    return "\n".join(lines) + "\n"


def check_keys(groups: list[tuple[str, dict[str, Any]]], source: str) -> None:
    """Every key is one DeepStream documents for its group (nvinfer [property]; deepstream-app groups)."""
    bad = []
    for group, keys in groups:
        known = NVINFER_KEYS if group == "property" else APP_KEYS.get(group.rstrip("0123456789"))
        if known is None:
            bad.append(f"[{group}]")
            continue
        bad += [f"[{group}] {k}" for k in keys if k not in known]
    if bad:
        raise FcnDeployError(f"{source}: keys DeepStream does not document: {', '.join(bad)}")


def package_deepstream(model_path: str | Path, output: str | Path, size: HW | None = None, batch_size: int = 4,
                       sources: list[str] | None = None, name: str | None = None, force: bool = False) -> Path:  # fmt: skip
    import onnx

    from fcn_deploy.core.onnx_io import load_onnx

    path = Path(model_path)
    if path.suffix.lower() != ".onnx":
        raise FcnDeployError(f"{path}: --format deepstream takes the .onnx (nvinfer builds its own engine)")
    if batch_size < 1:
        raise FcnDeployError(f"--batch-size must be >= 1, got {batch_size}")
    model = load_onnx(path)
    card = ModelCard.from_onnx(model, str(path))
    hw = tuple(size) if size else card.opt_shape
    card.shapes.check(hw, f"--serve-sizes {format_hw(hw)}")
    name = name or default_name(path)
    out = Path(output)
    if out.resolve() == path.resolve().parent or out.resolve() in path.resolve().parents:
        raise FcnDeployError(f"--output {out}: holds the input {path}; write the package somewhere else")
    refuse_nonempty(out, force)
    ds = deepstream_onnx(model, card, hw)
    check_deepstream_onnx(ds, model, card, hw, batches=(1, 2))
    infer = [("property", nvinfer_config(name, card, hw, batch_size))]
    app = app_config(name, hw, batch_size, list(sources) if sources else [SAMPLE_STREAM])
    check_keys(infer, "nvinfer config")
    check_keys(app, "deepstream-app config")
    with staged_folder(out) as tmp:
        onnx.save(ds, str(tmp / f"{name}.ds.onnx"))
        (tmp / "labels.txt").write_text("".join(f"{c}\n" for c in card.class_names))
        (tmp / f"config_infer_primary_{name}.txt").write_text(render_ini(infer, (
            f"nvinfer config for {name} ({card.variant}, {card.num_classes} classes, {format_hw(hw)}), written by "
            "fcn-deploy package --format deepstream.\nstrongly-typed needs DeepStream 7.1+ (TensorRT 10); drop it "
            "for older releases. The class map comes out as argmax_1 (int32, H x W x 1).")))  # fmt: skip
        (tmp / f"deepstream_app_{name}.txt").write_text(render_ini(app, (
            f"deepstream-app -c deepstream_app_{name}.txt  (run from this folder; edit [sourceN] uri=)")))  # fmt: skip
    return out


def check_deepstream_onnx(ds: Any, original: Any, card: ModelCard, hw: HW, batches: tuple[int, ...]) -> None:
    """argmax_1[..., 0] must equal the original model's class map on the same (normalised) input."""
    import onnxruntime as ort

    from fcn_deploy.core.outputs import normalize_outputs

    a = ort.InferenceSession(ds.SerializeToString(), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    k = np.float32(card.normalization.scale) / np.asarray(card.normalization.std, np.float32)
    kinds = {o.name: o.kind for o in card.outputs}
    names = [o.name for o in b.get_outputs() if o.name in kinds]
    for n in batches:
        pixels = rng.integers(0, 256, (n, 3, *hw)).astype(np.float32)
        fed = pixels - np.asarray(offsets(card), np.float32).reshape(1, 3, 1, 1)  # what nvinfer feeds
        want = normalize_outputs(dict(zip([kinds[x] for x in names], b.run(names, {card.input_name: fed * k.reshape(1, 3, 1, 1)}), strict=True)))["labels"]
        got = a.run([OUTPUT], {card.input_name: fed})[0]
        if got.shape != (n, *hw, 1) or got.dtype != np.int32 or not np.array_equal(got[..., 0], want):
            agree = float((got[..., 0] == want).mean()) if got.shape == (n, *hw, 1) else 0.0
            raise FcnDeployError(
                f"the DeepStream ONNX differs from the model at batch {n} ({100 * agree:.2f}% pixels agree, "
                f"shape {list(got.shape)} {got.dtype}); report this"
            )
