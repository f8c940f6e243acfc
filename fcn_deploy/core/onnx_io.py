"""Loading ONNX files we did not write ourselves: size cap, onnx.checker, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fcn_deploy.core.errors import FcnDeployError

MAX_MODEL_BYTES = 2 * 1024**3  # protobuf's own limit for a single-file model


def load_onnx(path: str | Path, full_check: bool = False) -> Any:
    """onnx.load + onnx.checker (onnx.load alone accepts a 0-byte file). Returns the ModelProto."""
    import onnx

    p = Path(path)
    if p.is_dir():
        raise FcnDeployError(f"{p}: is a directory, not an ONNX file; give the .onnx file inside it")
    if not p.is_file():
        raise FcnDeployError(f"{p}: no such ONNX file; check the path")
    size = p.stat().st_size
    if size == 0:
        raise FcnDeployError(f"{p}: ONNX file is empty (0 bytes); re-export it with `fcn-deploy export`")
    if size > MAX_MODEL_BYTES:
        raise FcnDeployError(f"{p}: {size / 1e9:.1f} GB is over the 2 GB single-file ONNX limit")
    with open(p, "rb") as f:
        magic = f.read(2)
    if magic == b"PK" or p.suffix.lower() in (".pt", ".pth"):
        raise FcnDeployError(
            f"{p}: is a PyTorch checkpoint, not an ONNX model; export it first: fcn-deploy export --checkpoint {p}"
        )
    try:
        model = onnx.load(str(p))
        onnx.checker.check_model(model, full_check=full_check)
    except Exception as e:  # protobuf DecodeError, ValidationError, ...: all mean a bad file
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise FcnDeployError(f"{p}: not a valid ONNX model ({msg}); re-export it") from None
    check_weights(model, str(p))
    return model


WEIGHTS_KEY = "fcn_deploy.weights_sha256"  # metadata_props entry beside the model card: the integrity record


def weights_sha256(model: Any) -> str:
    """sha256 over the main graph's initializers (sorted by name) and Constant node values: the model's weights."""
    import hashlib

    h = hashlib.sha256()
    for init in sorted(model.graph.initializer, key=lambda t: t.name):
        h.update(init.name.encode() + b"\0")
        h.update(init.SerializeToString(deterministic=True))
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                h.update(node.name.encode() + b"\0" + attr.SerializeToString(deterministic=True))
    return h.hexdigest()


def stamp_weights(model: Any) -> str:
    """Record the weights' sha256 in the model's metadata (replacing an older record), just before saving it."""
    digest = weights_sha256(model)
    props = [p for p in model.metadata_props if p.key != WEIGHTS_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    entry = model.metadata_props.add()
    entry.key, entry.value = WEIGHTS_KEY, digest
    return digest


def check_weights(model: Any, source: str) -> None:
    """Compare the weights with the integrity record, where the file has one (older files have none: unchecked)."""
    recorded = next((p.value for p in model.metadata_props if p.key == WEIGHTS_KEY), None)
    if recorded is None:
        return
    actual = weights_sha256(model)
    if actual != recorded:
        raise FcnDeployError(
            f"{source}: the weights do not match the file's integrity record (sha256 {actual[:12]}... recorded "
            f"{recorded[:12]}...): the file is damaged or was edited; re-export or re-copy it"
        )


def elem_types(model: Any) -> dict[str, int]:
    """TensorProto element type of every typed tensor of `model`'s graph (inputs, value_info, outputs, initializers);
    a tensor shape inference could not type is absent."""
    g = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.value_info, *g.output)}
    types.update((t.name, t.data_type) for t in g.initializer)
    return types


def data_tensors(model: Any) -> set[str]:
    """Tensors computed from the graph inputs' values; a Shape's output (and what is computed from shapes and
    constants alone, such as the matmul upsampling's interpolation matrices) is not data."""
    data = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    for node in model.graph.node:  # topologically sorted
        if node.op_type != "Shape" and data & set(node.input):
            data.update(node.output)
    return data


def shape_only_nodes(model: Any) -> list[str]:
    """Nodes that read no data (shape arithmetic, interpolation matrices): their float outputs are weights that
    depend on the input size, not activations, so INT8 never quantizes them and FP16 keeps them FP32 (the
    converter would retype a Cast's output but not its `to`)."""
    data = data_tensors(model)
    return [n.name for n in model.graph.node if n.name and not data & set(n.input)]

