"""`fcn-deploy package --format triton`: a Triton Inference Server model repository for an fcn-deploy model.

REPO/NAME/config.pbtxt + REPO/NAME/1/model.onnx (`onnxruntime_onnx`) or model.plan (`tensorrt_plan`), or with
backend "python" the same ONNX served by fcn-deploy's ONNX Runtime backend inside Triton's Python backend (the
form a CPU-only server runs). With preprocessing (the default) also REPO/NAME_preprocess (pictures -> network
input, the card's one preprocessing) and REPO/NAME_ensemble chaining the two, so a client sends pictures and gets
class maps. The repository is built in a temp folder beside REPO, every config.pbtxt is validated against Triton's
protobuf, and only then is the folder renamed into place.

Dynamic batching merges only requests whose inputs have equal shapes: serve fixed resolutions per model (the
warmup samples name them) and have clients send those sizes.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fcn_deploy
from fcn_deploy.core.atomic import sha256_file
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.shapes import HW, format_hw
from fcn_deploy.serving.staging import refuse_nonempty, staged_folder
from fcn_deploy.serving.triton_config import NAME_TO_TRITON, ONNX_TO_TRITON, to_pbtxt, validate_pbtxt

BACKENDS = ("auto", "python")  # auto: the platform the file type needs; python: ONNX via fcn-deploy's ORT backend
KINDS = ("auto", "gpu", "cpu")
IMAGE_INPUT = "IMAGE"
TEMPLATES = Path(__file__).parent / "triton_models"


@dataclass(frozen=True)
class TritonOptions:
    name: str | None = None
    backend: str = "auto"
    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = ()  # () = powers of two up to max_batch_size
    max_queue_delay_us: int = 2000
    dynamic_batching: bool = True
    kind: str = "auto"  # auto: KIND_CPU for the python backend, KIND_GPU otherwise
    instances: int = 1
    gpus: tuple[int, ...] = ()
    serve_sizes: tuple[HW, ...] = ()  # warmup resolutions; () = the card's opt shape
    with_preprocess: bool = True
    intra_op_threads: int = 0  # python backend: ONNX Runtime threads per instance (0 = its default)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise FcnDeployError(f"--backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.kind not in KINDS:
            raise FcnDeployError(f"--instance-kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.max_batch_size < 1:
            raise FcnDeployError(f"--max-batch-size must be >= 1, got {self.max_batch_size}")
        if self.instances < 1:
            raise FcnDeployError(f"--instances must be >= 1, got {self.instances}")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise FcnDeployError(f"--name {self.name!r}: use letters, digits, '_', '-' and '.' only")


@dataclass
class ServedModel:
    """What the configs need from the model file(s): the card, tensor types and shapes, engine limits."""

    card: ModelCard
    kind: str  # "onnx" or "plan"
    files: list[Path]
    input_dims: list[int]  # without batch
    outputs: list[dict[str, Any]]  # name, data_type, dims (without batch)
    max_batch: int | None = None  # engine profile limit
    compute_capabilities: list[str] = field(default_factory=list)


def _dims(shape: list[Any]) -> list[int]:
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape]


def inspect_onnx(path: Path) -> ServedModel:
    from fcn_deploy.core.onnx_io import load_onnx

    model = load_onnx(path)
    card = ModelCard.from_onnx(model, str(path))

    def shape(t: Any) -> list[Any]:
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.type.tensor_type.shape.dim]

    graph_inputs = {i.name: i for i in model.graph.input}
    if card.input_name not in graph_inputs:
        raise FcnDeployError(f"{path}: the card's input {card.input_name!r} is not in the graph; re-export it")
    in_shape = shape(graph_inputs[card.input_name])
    if len(in_shape) != 4:
        raise FcnDeployError(f"{path}: input {card.input_name!r} has rank {len(in_shape)}, not N x 3 x H x W")
    if isinstance(in_shape[0], int) and in_shape[0] > 0:
        raise FcnDeployError(
            f"{path}: the batch dimension is fixed to {in_shape[0]}; Triton batches requests, so export with a "
            "dynamic batch (the default of `fcn-deploy export`)"
        )
    graph_outputs = {o.name: o for o in model.graph.output}
    outputs = []
    for spec in card.outputs:
        o = graph_outputs.get(spec.name)
        if o is None:
            continue
        elem = o.type.tensor_type.elem_type
        if elem not in ONNX_TO_TRITON:
            raise FcnDeployError(f"{path}: output {spec.name!r} has ONNX type {elem}, which Triton cannot serve")
        outputs.append({"name": spec.name, "data_type": ONNX_TO_TRITON[elem], "dims": _dims(shape(o)[1:]),
                        "kind": spec.kind})  # fmt: skip
    if not outputs:
        raise FcnDeployError(f"{path}: none of the card's outputs is in the graph; re-export the model")
    return ServedModel(card, "onnx", [path], _dims(in_shape[1:]), outputs)


def inspect_engines(paths: list[Path]) -> ServedModel:
    from fcn_deploy.engine.manifest import read_manifest

    served = None
    for path in paths:
        m = read_manifest(path)
        if sha256_file(path) != m.engine_sha256:
            raise FcnDeployError(f"{path}: does not match its manifest (sha256 differs); rebuild it with build-engine")
        card = ModelCard.from_dict(m.model_card, f"{path} manifest")
        io = {t["name"]: t for t in m.io_tensors}
        if card.input_name not in io:
            raise FcnDeployError(f"{path}: the manifest lists no input {card.input_name!r}; rebuild the engine")
        outputs = []
        for spec in card.outputs:
            t = io.get(spec.name)
            if t is None:
                continue
            if t["dtype"] not in NAME_TO_TRITON:
                raise FcnDeployError(f"{path}: output {spec.name!r} has type {t['dtype']}, which Triton cannot serve")
            outputs.append({"name": spec.name, "data_type": NAME_TO_TRITON[t["dtype"]],
                            "dims": _dims(t["shape"][1:]), "kind": spec.kind})  # fmt: skip
        cc = f"{m.compute_capability[0]}.{m.compute_capability[1]}"
        max_batch = int(m.profile["batch"][-1])
        one = ServedModel(card, "plan", [path], _dims(io[card.input_name]["shape"][1:]), outputs, max_batch, [cc])
        if served is None:
            served = one
            continue
        if one.card.to_dict() | {"provenance": {}} != served.card.to_dict() | {"provenance": {}} or (
            one.outputs != served.outputs
        ):
            raise FcnDeployError(f"{path}: not the same model as {served.files[0]}; give engines of one ONNX")
        if cc in served.compute_capabilities:
            raise FcnDeployError(f"{path}: a second engine for compute capability {cc}; give one per GPU kind")
        served.files.append(path)
        served.compute_capabilities.append(cc)
        served.max_batch = min(served.max_batch or max_batch, max_batch)
    assert served is not None
    return served


def preferred_sizes(options: TritonOptions, max_batch: int) -> list[int]:
    if options.preferred_batch_sizes:
        bad = [p for p in options.preferred_batch_sizes if not 1 <= p <= max_batch]
        if bad:
            raise FcnDeployError(f"--preferred-batch-sizes {bad}: each must be in 1..{max_batch} (--max-batch-size)")
        return sorted(set(options.preferred_batch_sizes))
    sizes = [p for p in (2, 4, 8, 16, 32, 64) if p <= max_batch]
    return sizes or [max_batch]


def _parameters(card: ModelCard) -> dict[str, Any]:
    return {
        "fcn_deploy_card": {"string_value": card.to_json()},
        "classes": {"string_value": json.dumps(list(card.class_names))},
        "palette": {"string_value": json.dumps([list(p) for p in card.palette])},
        "label_file": {"string_value": "labels.txt"},
    }


def _instance_group(options: TritonOptions, default_kind: str) -> list[dict[str, Any]]:
    kind = {"auto": default_kind, "gpu": "KIND_GPU", "cpu": "KIND_CPU"}[options.kind]
    group: dict[str, Any] = {"count": options.instances, "kind": kind}
    if kind == "KIND_GPU" and options.gpus:
        group["gpus"] = list(options.gpus)
    return [group]


def network_config(name: str, served: ServedModel, options: TritonOptions, max_batch: int) -> dict[str, Any]:
    card = served.card
    python = options.backend == "python"
    config: dict[str, Any] = {"name": name, "max_batch_size": max_batch}
    if python:
        config["backend"] = "python"
    else:
        config["platform"] = "onnxruntime_onnx" if served.kind == "onnx" else "tensorrt_plan"
    config["input"] = [{"name": card.input_name, "data_type": "TYPE_FP32", "dims": served.input_dims}]
    config["output"] = [
        {"name": o["name"], "data_type": o["data_type"], "dims": o["dims"],
         **({"label_filename": "labels.txt"} if o["kind"] == "labels" else {})}
        for o in served.outputs
    ]  # fmt: skip
    if options.dynamic_batching:
        config["dynamic_batching"] = {
            "preferred_batch_size": preferred_sizes(options, max_batch),
            "max_queue_delay_microseconds": options.max_queue_delay_us,
        }
    config["instance_group"] = _instance_group(options, "KIND_CPU" if python else "KIND_GPU")
    if served.kind == "plan" and len(served.files) > 1:
        config["cc_model_filenames"] = {cc: f"model_sm{cc.replace('.', '')}.plan" for cc in served.compute_capabilities}
    sizes = options.serve_sizes or (card.opt_shape,)
    fixed = served.input_dims[1:] if all(d > 0 for d in served.input_dims[1:]) else None
    warmup = []
    for hw in sizes:
        if fixed and list(hw) != fixed:
            raise FcnDeployError(f"--serve-sizes {format_hw(hw)}: this model takes only {format_hw(fixed)}")
        if fixed is None and served.kind == "plan":
            card.shapes.check(hw, "--serve-sizes")
        warmup.append({
            "name": f"warmup_{hw[0]}x{hw[1]}", "batch_size": 1, "count": 1,
            "inputs": {card.input_name: {"data_type": "TYPE_FP32", "dims": [3, int(hw[0]), int(hw[1])],
                                         "zero_data": True}},
        })  # fmt: skip
    config["model_warmup"] = warmup
    params = _parameters(card)
    if python and options.intra_op_threads:
        params["intra_op_threads"] = {"string_value": str(options.intra_op_threads)}
    config["parameters"] = params
    return config


def preprocess_config(name: str, served: ServedModel, max_batch: int) -> dict[str, Any]:
    return {
        "name": f"{name}_preprocess",
        "backend": "python",
        "max_batch_size": max_batch,
        "input": [{"name": IMAGE_INPUT, "data_type": "TYPE_UINT8", "dims": [-1, -1, -1]}],
        "output": [{"name": served.card.input_name, "data_type": "TYPE_FP32", "dims": [3, -1, -1]}],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": {"fcn_deploy_card": {"string_value": served.card.to_json()}},
    }


def ensemble_config(name: str, served: ServedModel, max_batch: int) -> dict[str, Any]:
    network_input = served.card.input_name
    return {
        "name": f"{name}_ensemble",
        "platform": "ensemble",
        "max_batch_size": max_batch,
        "input": [{"name": IMAGE_INPUT, "data_type": "TYPE_UINT8", "dims": [-1, -1, -1]}],
        "output": [{"name": o["name"], "data_type": o["data_type"], "dims": o["dims"]} for o in served.outputs],
        "ensemble_scheduling": {"step": [
            {"model_name": f"{name}_preprocess", "model_version": -1,
             "input_map": {IMAGE_INPUT: IMAGE_INPUT}, "output_map": {network_input: "preprocessed"}},
            {"model_name": name, "model_version": -1, "input_map": {network_input: "preprocessed"},
             "output_map": {o["name"]: o["name"] for o in served.outputs}},
        ]},  # fmt: skip
        "parameters": _parameters(served.card),
    }


def ship_foundation(dst: Path, with_ort_backend: bool) -> None:
    """Copy fcn-deploy's torch-free foundation (and the ONNX Runtime backend) beside a Python-backend model."""
    src = Path(fcn_deploy.__file__).parent
    (dst / "fcn_deploy" / "core").mkdir(parents=True)
    shutil.copy2(src / "__init__.py", dst / "fcn_deploy" / "__init__.py")
    for f in sorted((src / "core").glob("*.py")):
        shutil.copy2(f, dst / "fcn_deploy" / "core" / f.name)
    if with_ort_backend:
        (dst / "fcn_deploy" / "runtime").mkdir()
        for f in ("__init__.py", "ort_backend.py"):
            shutil.copy2(src / "runtime" / f, dst / "fcn_deploy" / "runtime" / f)


def _write_config(model_dir: Path, config: dict[str, Any]) -> None:
    source = str(model_dir / "config.pbtxt")
    text = to_pbtxt(config, source)
    (model_dir / "config.pbtxt").write_text(text)
    validate_pbtxt((model_dir / "config.pbtxt").read_text(), source)  # what the server will read


def default_name(path: Path) -> str:
    stem = path.name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "fcn"


def package_triton(models: list[str | Path], output: str | Path, options: TritonOptions, force: bool = False) -> Path:
    """Write the repository for `models` (one ONNX, or one or more engines of one ONNX) at `output`."""
    paths = [Path(m) for m in models]
    if not paths:
        raise FcnDeployError("give a model: an fcn-deploy .onnx, or .engine/.plan files with their manifests")
    for p in paths:
        if not p.is_file():
            raise FcnDeployError(f"{p}: no such model file; check the path")
    suffixes = {p.suffix.lower() for p in paths}
    if suffixes == {".onnx"}:
        if len(paths) > 1:
            raise FcnDeployError("several ONNX files: package one ONNX per repository model (several engines are fine)")
        served = inspect_onnx(paths[0])
    elif suffixes <= {".engine", ".plan"}:
        if options.backend == "python":
            raise FcnDeployError("--backend python serves an ONNX through ONNX Runtime; give the .onnx, not engines")
        served = inspect_engines(paths)
    else:
        raise FcnDeployError(f"{', '.join(map(str, paths))}: give one .onnx, or .engine/.plan files (not a mix)")

    max_batch = options.max_batch_size
    if served.max_batch is not None and max_batch > served.max_batch:
        raise FcnDeployError(
            f"--max-batch-size {max_batch}: the engine profile allows at most batch {served.max_batch} "
            f"(Triton would refuse it); pass --max-batch-size {served.max_batch} or rebuild with a larger --batch"
        )
    name = options.name or default_name(paths[0])
    out = Path(output)
    resolved = out.resolve()
    for p in paths:
        if resolved == p.resolve() or resolved in p.resolve().parents:
            raise FcnDeployError(f"--output {out}: holds the input {p}; write the repository somewhere else")
    refuse_nonempty(out, force)
    with staged_folder(out) as tmp:
        model_dir = tmp / name
        version = model_dir / "1"
        version.mkdir(parents=True)
        if served.kind == "onnx":
            shutil.copy2(served.files[0], version / "model.onnx")
            if options.backend == "python":
                shutil.copy2(TEMPLATES / "onnx_model.py", version / "model.py")
                ship_foundation(version, with_ort_backend=True)
        elif len(served.files) == 1:
            shutil.copy2(served.files[0], version / "model.plan")
        else:
            for f, cc in zip(served.files, served.compute_capabilities, strict=True):
                shutil.copy2(f, version / f"model_sm{cc.replace('.', '')}.plan")
        (model_dir / "labels.txt").write_text("".join(f"{c}\n" for c in served.card.class_names))
        _write_config(model_dir, network_config(name, served, options, max_batch))
        if options.with_preprocess:
            pre = tmp / f"{name}_preprocess"
            (pre / "1").mkdir(parents=True)
            shutil.copy2(TEMPLATES / "preprocess_model.py", pre / "1" / "model.py")
            ship_foundation(pre / "1", with_ort_backend=False)
            _write_config(pre, preprocess_config(name, served, max_batch))
            ens = tmp / f"{name}_ensemble"
            (ens / "1").mkdir(parents=True)  # an ensemble has an empty version folder
            (ens / "labels.txt").write_text((model_dir / "labels.txt").read_text())
            _write_config(ens, ensemble_config(name, served, max_batch))
    return out
