"""`quantize(QuantizeConfig) -> QuantizeResult`: an FP32 fcn-deploy ONNX in, an INT8 (Q/DQ) or FP16 ONNX out.

Steps: load and check the model, pick calibration and held-out images, get per-tensor ranges (from a matching
cache, else by streaming the calibration images through the FP32 model), lower, check, then evaluate on held-out
images and write the model and its JSON summary atomically (nothing is written if any step fails).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcn_deploy.calibration import cache as calib_cache
from fcn_deploy.calibration import fp16, guard, int8, ranges
from fcn_deploy.calibration.images import ImageSet, from_dataset, from_folder, from_video
from fcn_deploy.calibration.plan_plot import draw_plan
from fcn_deploy.calibration.reader import ImageReader
from fcn_deploy.calibration.summary import compare
from fcn_deploy.core.atomic import scratch_dir, sha256_file, write_bytes, write_text
from fcn_deploy.core.card import METADATA_KEY, ModelCard, Normalization, OutputSpec
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.onnx_io import stamp_weights
from fcn_deploy.core.shapes import format_hw

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp16")
WEIGHT_ROUNDINGS = ("gptq", "nearest")
PROVENANCE_KEY = "fcn_deploy.precision"  # provenance of a card-less model (the card holds it otherwise)


@dataclass(frozen=True)
class QuantizeConfig:
    model: Path
    precision: str  # "int8" | "fp16"
    output: Path | None = None  # default MODEL.int8.onnx / MODEL.fp16.onnx
    target: str = "tensorrt"  # "tensorrt" | "onnxruntime" (INT8 flavour)
    calib_data: Path | None = None  # folder of images
    calib_dataset: str | None = None  # "camvid" or "camvid:train"
    data_root: Path | None = None
    calib_video: Path | None = None
    num_images: int = 300
    method: str | None = None  # entropy | percentile | minmax | mse | best; None: best with --auto, else entropy
    calib_shapes: tuple[tuple[int, int], ...] | None = None  # default: the card's opt shape (or a static input)
    exclude: tuple[str, ...] = ()  # node names or op types kept in FP32
    float_ends: bool = True  # INT8: also keep int8.float_ends (first conv, output head) in FP32; see there why
    cache: Path | None = None
    mean: tuple[float, float, float] | None = None  # for an ONNX without model card: RGB, pixel/255 units
    std: tuple[float, float, float] | None = None
    seed: int = 0
    eval_images: int | None = 50  # held-out images for the summary (None = all)
    latency_runs: int = 5
    latency_shape: tuple[int, int] | None = None  # default: the first held-out image at the first calib shape
    fp16_max_activation: float = fp16.DATA_MAX
    auto: bool = False  # INT8: measured per-group sensitivity and an automatic FP32-group plan (calibration.plan)
    # INT8: the budget of the guard (calibration.guard) and of --auto, points of `metric` on `plan_images`
    # calibration images held out from the ranges; strict: past the budget raise instead of warning
    max_drop: float = 0.3
    metric: str | None = None  # miou | agreement (default miou when the images have masks)
    plan_images: int = 32
    strict: bool = False
    weight_bits: int | None = None  # INT8 --target onnxruntime: 7 or 8; None: chosen from this CPU's flags
    weight_rounding: str | None = None  # INT8: gptq (calibration.gptq) | nearest; None: gptq with --auto, else nearest


@dataclass(frozen=True)
class QuantizeResult:
    output: Path
    summary: dict[str, Any]
    summary_path: Path
    cache_hit: bool


def resolve_rounding(rounding: str | None, auto: bool) -> str:
    """INT8 weight rounding: `rounding`, else GPTQ for --auto (it keeps fewer groups out of INT8 at the same
    budget: 5 instead of 7 on the CamVid model, 0.64x instead of 0.71x FP32; README) and round-to-nearest
    otherwise (what every INT8 tool does by default, and 3-4x faster to lower)."""
    return rounding or ("gptq" if auto else "nearest")


def resolve_method(method: str | None, auto: bool) -> str:
    """The calibration method a lowering uses: `method`, else `best` for --auto (it measures anyway) and TensorRT's
    entropy otherwise."""
    return method or (ranges.BEST if auto else "entropy")


def default_output(model: Path, precision: str) -> Path:
    return model.with_name(f"{model.name.removesuffix('.onnx')}.{precision}.onnx")


def _check_config(cfg: QuantizeConfig) -> None:
    if cfg.precision not in PRECISIONS:
        raise FcnDeployError(f"precision {cfg.precision!r}: choose int8 or fp16")
    if cfg.target not in int8.TARGETS:
        raise FcnDeployError(f"--target {cfg.target!r}: choose one of {', '.join(int8.TARGETS)}")
    if cfg.method is not None and cfg.method not in (*ranges.METHODS, ranges.BEST):
        raise FcnDeployError(f"--method {cfg.method!r}: choose one of {', '.join((*ranges.METHODS, ranges.BEST))}")
    if cfg.num_images < 1:
        raise FcnDeployError(f"--num-images {cfg.num_images}: must be at least 1")
    sources = [s for s in (cfg.calib_data, cfg.calib_dataset, cfg.calib_video) if s is not None]
    if not sources:
        raise FcnDeployError(
            f"{cfg.model}: {cfg.precision.upper()} needs calibration images (never random scales); "
            "pass --calib-data DIR, --calib-dataset NAME[:SPLIT] --data-root DIR, or --calib-video FILE"
        )
    if len(sources) > 1:
        raise FcnDeployError("give one calibration source: --calib-data, --calib-dataset or --calib-video")
    if cfg.auto and cfg.precision != "int8":
        raise FcnDeployError("--auto plans INT8 only; use it with --int8")
    if cfg.precision == "int8" and cfg.max_drop < 0:
        raise FcnDeployError(f"--max-drop {cfg.max_drop}: must be 0 or more points")
    if cfg.precision == "int8" and cfg.plan_images < 1:
        raise FcnDeployError(f"--plan-images {cfg.plan_images}: must be at least 1")
    if cfg.weight_rounding is not None and cfg.weight_rounding not in WEIGHT_ROUNDINGS:
        raise FcnDeployError(f"--weight-rounding {cfg.weight_rounding!r}: choose one of {', '.join(WEIGHT_ROUNDINGS)}")
    if cfg.precision == "int8":
        int8.choose_weight_bits(cfg.target, cfg.weight_bits)  # refuses a bad --weight-bits before any work
    elif cfg.weight_bits is not None:
        raise FcnDeployError("--weight-bits applies to --int8 only")


def _card_and_norm(model: Any, cfg: QuantizeConfig) -> tuple[ModelCard | None, Normalization]:
    has_card = any(p.key == METADATA_KEY for p in model.metadata_props)
    if has_card:
        card = ModelCard.from_onnx(model, str(cfg.model))
        if card.precision != "fp32":
            raise FcnDeployError(f"{cfg.model}: is already {card.precision}; quantize the FP32 model instead")
        if cfg.mean is not None or cfg.std is not None:
            log.warning("%s: has a model card; ignoring --mean/--std in favour of its normalisation", cfg.model)
        return card, card.normalization
    if cfg.mean is None or cfg.std is None:
        raise FcnDeployError(
            f"{cfg.model}: has no fcn-deploy model card, so its preprocessing is unknown; pass --mean and --std "
            "(RGB, pixel/255 units, e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225) or export it with "
            "`fcn-deploy export`"
        )
    return None, Normalization(tuple(cfg.mean), tuple(cfg.std), "RGB", 1.0 / 255.0)


def _select_images(cfg: QuantizeConfig) -> tuple[ImageSet, ImageSet]:
    if cfg.calib_data is not None:
        return from_folder(cfg.calib_data, cfg.num_images, cfg.seed, cfg.eval_images)
    if cfg.calib_dataset is not None:
        return from_dataset(cfg.calib_dataset, cfg.data_root, cfg.num_images, cfg.seed, cfg.eval_images)
    return from_video(cfg.calib_video, cfg.num_images, cfg.seed, cfg.eval_images)


def shapes_text(shapes: Any) -> str:
    """Calibration shapes as a person writes them: '64x64, 128x128' (None: each image at its own size)."""
    return ", ".join("each image's own size" if s is None else format_hw(tuple(s)) for s in shapes)


def _input_and_shapes(model: Any, card: ModelCard | None, cfg: QuantizeConfig):
    weights = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise FcnDeployError(f"{cfg.model}: expected one image input, found {[i.name for i in inputs]}")
    name = inputs[0].name
    dims = inputs[0].type.tensor_type.shape.dim
    static = tuple(d.dim_value for d in dims[2:4]) if len(dims) == 4 and all(d.dim_value for d in dims[2:4]) else None
    if cfg.calib_shapes:
        if static and any(tuple(s) != static for s in cfg.calib_shapes):
            raise FcnDeployError(f"{cfg.model}: input is fixed at {static[0]}x{static[1]}; "
                                 f"--calib-shapes {shapes_text(cfg.calib_shapes)} cannot be fed")
        return name, tuple(tuple(s) for s in cfg.calib_shapes)
    if static:
        return name, (static,)
    return name, ((tuple(card.opt_shape),) if card else (None,))


def quantize(cfg: QuantizeConfig) -> QuantizeResult:
    import onnx

    from fcn_deploy.core.onnx_io import load_onnx

    _check_config(cfg)
    model = load_onnx(cfg.model)
    reason = int8.is_lowered(model)
    if reason:
        raise FcnDeployError(f"{cfg.model}: already lowered ({reason}); quantize the FP32 model instead")
    card, norm = _card_and_norm(model, cfg)
    output = Path(cfg.output) if cfg.output else default_output(Path(cfg.model), cfg.precision)
    if output.resolve() == Path(cfg.model).resolve():
        raise FcnDeployError(f"{output}: the output would overwrite the input model; choose another --output")
    input_name, shapes = _input_and_shapes(model, card, cfg)
    exclude_nodes = int8.resolve_exclude(model, cfg.exclude)
    if cfg.precision == "int8":
        convs = {n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")}
        if not convs:
            raise FcnDeployError(
                f"{cfg.model}: has no Conv/ConvTranspose node, so INT8 would quantize nothing; give an FCN model "
                "(from `fcn-deploy export`) or lower this one with --fp16"
            )
        if not convs - set(exclude_nodes):
            raise FcnDeployError(
                f"{cfg.model}: --exclude keeps every Conv/ConvTranspose in float, so nothing would be quantized; "
                "exclude fewer nodes"
            )
        ends = set(int8.float_ends(model)) if cfg.float_ends else set()
        if convs - set(exclude_nodes) - ends:
            exclude_nodes = sorted(set(exclude_nodes) | ends)
        elif ends:  # a model this small is all "ends": quantize it whole rather than not at all
            log.warning("%s: too few layers to keep the first conv and the output head in FP32; quantizing all",
                        cfg.model)
    calib_images, held_out = _select_images(cfg)
    classes = calib_images.num_classes if calib_images.has_masks else None
    if card is not None and classes is not None and classes != card.num_classes:
        raise FcnDeployError(
            f"{calib_images.source}: its masks have {classes} classes, but {cfg.model} predicts {card.num_classes}; "
            "calibrate on the dataset the model was trained on"
        )
    plan_images = None  # INT8: held out from the ranges to judge the lowering (guard) and the --auto plan
    if cfg.precision == "int8" and (cfg.auto or len(calib_images) >= 2):
        from fcn_deploy.calibration.sensitivity import split_for_plan

        calib_images, plan_images = split_for_plan(calib_images, cfg.plan_images)
    method = resolve_method(cfg.method, cfg.auto) if cfg.precision == "int8" else "minmax"
    if method == ranges.BEST and plan_images is None:
        raise FcnDeployError(
            f"{calib_images.source}: --method best measures each method on calibration images held out from the "
            f"ranges, so it needs at least 2 ({len(calib_images)} found); raise --num-images or pick a --method"
        )
    if not len(held_out):
        log.warning("no held-out images left; the summary compares on the calibration images themselves")
        held_out = calib_images

    key = calib_cache.CacheKey(
        onnx_sha256=sha256_file(cfg.model),
        images=calib_images.fingerprint,
        preprocessing={"mean": list(norm.mean), "std": list(norm.std), "channel_order": norm.channel_order,
                       "scale": norm.scale},
        method=method,
        num_images=len(calib_images),
        shapes=shapes,
        statistic=cfg.precision,
    )
    cached = calib_cache.load(cfg.cache, key) if cfg.cache else None

    def reader() -> ImageReader:
        return ImageReader(calib_images, norm, input_name, shapes)

    with scratch_dir("quantize") as tmp:  # fcn-quantize.PID.*: a killed run's is swept by the next
        work = Path(tmp)
        if cfg.precision == "int8":
            source = int8.prepare(Path(cfg.model), work / "prepared.onnx")
            op_types = int8.calibration_op_types()
        else:
            source = work / "model.onnx"
            onnx.save(onnx.shape_inference.infer_shapes(model), str(source))
            op_types = None
        prepared = onnx.load(str(source))
        if cached is None:
            tensors = ranges.calibration_tensors(prepared, op_types)
            log.info("calibrating %d tensors on %d images at %s (%s)", len(tensors), len(calib_images),
                     shapes_text(shapes), key.method)
            if method == ranges.BEST:
                tensor_ranges = ranges.collect_all_ranges(source, reader(), tensors)
            else:
                tensor_ranges = ranges.collect_ranges(source, reader(), tensors, method)
            if cfg.cache:
                calib_cache.save(cfg.cache, key, tensor_ranges)
        else:
            log.info("calibration cache %s matches: skipping calibration", cfg.cache)
            tensor_ranges = cached

        if cfg.precision == "int8":
            bits, why = int8.choose_weight_bits(cfg.target, cfg.weight_bits)
            rounded, rounding = None, resolve_rounding(cfg.weight_rounding, cfg.auto)
            if rounding == "gptq":
                from fcn_deploy.calibration import gptq

                log.info("GPTQ: Conv input statistics on %d calibration images", min(gptq.IMAGES, len(calib_images)))
                rounded = gptq.round_weights(prepared, source, _feeds(reader()), bits, exclude_nodes)
            details = {"target": cfg.target, "method": method, "tool": _ort_tool(), "weight_bits": bits,
                       "weight_bits_reason": why, "weight_rounding": rounding,
                       "gptq_weights": len(rounded or {}), "auto": cfg.auto}
            judge, higher = None, []
            plan_card = card or _stand_in_card(model, norm, input_name, plan_images or held_out)
            if method == ranges.BEST:
                from fcn_deploy.calibration.plan import best_method

                chosen, tensor_ranges, trials = best_method(cfg.model, prepared, tensor_ranges, cfg.target,
                                                            exclude_nodes, plan_images, shapes[0], plan_card,
                                                            cfg.metric, bits, rounded=rounded)  # fmt: skip
                details.update(method_chosen=chosen, method_trials=trials)
            if cfg.auto:
                from fcn_deploy.calibration.plan import search

                auto = search(cfg.model, prepared, tensor_ranges, cfg.target, exclude_nodes, plan_images, shapes[0],
                              plan_card, cfg.max_drop, cfg.metric, say=log.info,
                              cache=Path(f"{cfg.cache}.sensitivity.json") if cfg.cache else None,
                              cache_key={"calibration": key.digest(), "method": details.get("method_chosen", method)},
                              weight_bits=bits, rounded=rounded)  # fmt: skip
                details["auto_plan"] = {**auto.to_dict(), "plan_images_asked": cfg.plan_images}
                judge, higher = auto.judge, auto.kept_nodes
            from fcn_deploy.calibration.plan import lower_plan

            lowered, kept, half = lower_plan(prepared, tensor_ranges, cfg.target, exclude_nodes, higher, bits,
                                             lambda: ImageReader(plan_images, norm, input_name, shapes), rounded)
            exclude_nodes = sorted(set(exclude_nodes) | set(higher))
            if half:
                details["kept_fp16_nodes"] = half
            details["guard"] = _guard(cfg, lowered, plan_images, shapes[0],
                                      card or _stand_in_card(model, norm, input_name, plan_images or held_out), judge)
            guard.enforce(details["guard"], output, cfg.strict, cfg.auto)
        else:
            keep = fp16.block_list(prepared, tensor_ranges, cfg.fp16_max_activation, exclude_nodes)

            lowered, kept = fp16.lower(prepared, keep, lambda: _feeds(reader()))
            details = {"fp16_max_activation": cfg.fp16_max_activation, "tool": "onnxconverter-common float16"}

        provenance = {
            "precision": cfg.precision,
            **details,
            "parent_onnx_sha256": key.onnx_sha256,
            "calibration_source": calib_images.source,
            # INT8: the selection's total; `range_images` of them fit the ranges, the rest judged the guard/plan
            "num_images": len(calib_images) + (len(plan_images) if plan_images is not None else 0),
            **({"range_images": len(calib_images)} if plan_images is not None else {}),
            "skipped_images": calib_images.skipped,
            "shapes": [list(s) if s else None for s in shapes],
            "cache_key": key.digest(),
            "excluded_nodes": list(exclude_nodes),
            "kept_fp32_nodes": list(kept),
        }
        _attach(lowered, card, provenance)
        stamp_weights(lowered)  # the integrity record, checked by load_onnx
        data = lowered.SerializeToString()
        summary = compare(
            cfg.model, data, held_out, shapes[0], None if card else _stand_in_card(model, norm, input_name, held_out),
            latency_runs=cfg.latency_runs, latency_shape=cfg.latency_shape, class_names=card.class_names if card else None,
        )
    summary = {"model": str(output), "parent": str(cfg.model), "held_out": held_out is not calib_images,
               "cache_hit": cached is not None, **provenance, **summary}
    summary_path = output.with_suffix(".json")
    write_bytes(output, data)
    write_text(summary_path, json.dumps(summary, indent=1, default=_json_default) + "\n")
    draw_plan(summary.get("auto_plan"), output.with_suffix(".plan.png"))  # --auto: MODEL.plan.png (matplotlib)
    return QuantizeResult(output, summary, summary_path, cached is not None)


def _feeds(reader: ImageReader) -> Any:
    while (feed := reader.get_next()) is not None:
        yield feed


def _guard(cfg: QuantizeConfig, lowered: Any, images: ImageSet | None, size: tuple[int, int] | None,
           card: ModelCard, judge: Any) -> dict[str, Any]:  # fmt: skip
    # The graph about to be written: the card attached after this does not change what it computes.
    return guard.measure(cfg.model, lowered.SerializeToString(), images, size, card, cfg.metric, cfg.max_drop,
                         cfg.plan_images, judge, Path(f"{cfg.cache}.guard.json") if cfg.cache else None)


def _stand_in_card(model: Any, norm: Normalization, input_name: str, images: ImageSet) -> ModelCard:
    """What the summary needs of a card-less model: --mean/--std, its input and its first output (class scores
    when 4-D, else labels). The class count is the images' (1 without masks: nothing is scored then)."""
    out = model.graph.output[0]
    kind = "logits" if len(out.type.tensor_type.shape.dim) == 4 else "labels"
    return ModelCard.default("fcn8s", images.num_classes or 1, normalization=norm, input_name=input_name,
                             outputs=(OutputSpec(out.name, kind),))


def _attach(model: Any, card: ModelCard | None, provenance: dict[str, Any]) -> None:
    if card is not None:
        card.replace(precision=provenance["precision"], provenance={**card.provenance, "lowering": provenance}) \
            .attach(model)
        return
    entry = model.metadata_props.add()
    entry.key, entry.value = PROVENANCE_KEY, json.dumps(provenance, sort_keys=True)


def _ort_tool() -> str:
    import onnxruntime

    return f"onnxruntime.quantization.QDQQuantizer {onnxruntime.__version__}"


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
