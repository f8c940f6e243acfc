"""The model card: everything a runtime needs to use a model, defined once.

A card is the model configuration (fcn_deploy.core.model_config, the architecture fields) plus what deploying it
needs: classes, palette, normalisation, input/outputs, the recommended shape range. It travels inside checkpoints (as a dict), inside ONNX graphs (`metadata_props`, one JSON document under
METADATA_KEY) and inside engine manifests, so no later command asks the user for classes or normalisation again.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from fcn_deploy import __version__
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.model_config import MODEL_FIELDS, ModelConfig, stored_value_problem
from fcn_deploy.core.shapes import DEFAULT_SHAPES, HW, ShapeRange

SCHEMA_VERSION = 1
METADATA_KEY = "fcn_deploy.model_card"
OUTPUT_KINDS = ("labels", "logits", "probs")

# Paper preprocessing (Caffe VGG16 weights): BGR, 0-255, mean subtracted, no std.
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("imagenet", "caffe")  # the presets of Normalization.preset


@dataclass(frozen=True)
class Normalization:
    """x = (pixel * scale - mean) / std, with channels in `channel_order` (pixels arrive as RGB uint8)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"
    scale: float = 1.0 / 255.0

    @classmethod
    def preset(cls, name: str) -> Normalization:
        if name == "imagenet":
            return cls(IMAGENET_MEAN, IMAGENET_STD, "RGB", 1.0 / 255.0)
        if name == "caffe":
            return cls(CAFFE_MEAN_BGR, (1.0, 1.0, 1.0), "BGR", 1.0)
        raise FcnDeployError(f"unknown normalisation {name!r}; choose one of {', '.join(NORMALIZATIONS)}")

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise FcnDeployError(f"normalisation channel_order {self.channel_order!r}: must be RGB or BGR")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise FcnDeployError("normalisation needs 3 mean and 3 non-zero std values")


@dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str  # one of OUTPUT_KINDS

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise FcnDeployError(f"output {self.name!r}: kind {self.kind!r} must be one of {OUTPUT_KINDS}")


def voc_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC bit-interleaved palette; distinct colours for any number of classes."""
    out = []
    for k in range(n):
        r = g = b = 0
        c, i = k, 0
        while c > 0:
            r |= ((c >> 0) & 1) << (7 - i)
            g |= ((c >> 1) & 1) << (7 - i)
            b |= ((c >> 2) & 1) << (7 - i)
            c >>= 3
            i += 1
        out.append((r, g, b))
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class ModelCard(ModelConfig):
    """The architecture fields (variant, num_classes, width, padding, ...) come from ModelConfig."""

    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    normalization: Normalization
    ignore_index: int | None = 255
    input_name: str = "image"
    input_layout: str = "NCHW"
    outputs: tuple[OutputSpec, ...] = (OutputSpec("labels", "labels"),)
    # min and max left out: the default range widened to contain opt (ShapeRange.around).
    min_shape: HW | None = None
    opt_shape: HW = DEFAULT_SHAPES.opt_hw
    max_shape: HW | None = None
    training_dataset: str | None = None
    training_resolution: tuple[int, int] | None = None
    checkpoint_sha256: str | None = None
    upsample: str = "deconv"
    precision: str = "fp32"
    provenance: dict[str, Any] = field(default_factory=dict)
    exporter_version: str = __version__
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.class_names) != self.num_classes or len(self.palette) != self.num_classes:
            raise FcnDeployError(
                f"model card: {self.num_classes} classes but {len(self.class_names)} names and "
                f"{len(self.palette)} palette colours"
            )
        around = DEFAULT_SHAPES.around(self.opt_shape)
        shapes = ShapeRange(self.min_shape or around.min_hw, self.opt_shape, self.max_shape or around.max_hw)
        for name, hw in zip(("min_shape", "opt_shape", "max_shape"), (shapes.min_hw, shapes.opt_hw, shapes.max_hw),
                            strict=True):  # fmt: skip
            object.__setattr__(self, name, hw)

    @property
    def config(self) -> ModelConfig:
        """The architecture alone: what builds the model."""
        return ModelConfig(**{k: getattr(self, k) for k in MODEL_FIELDS})

    @property
    def shapes(self) -> ShapeRange:
        return ShapeRange(self.min_shape, self.opt_shape, self.max_shape)  # type: ignore[arg-type]

    def with_shapes(self, shapes: ShapeRange) -> ModelCard:
        return self.replace(min_shape=shapes.min_hw, opt_shape=shapes.opt_hw, max_shape=shapes.max_hw)

    @classmethod
    def from_config(cls, config: ModelConfig, **kw: Any) -> ModelCard:
        """A card for `config` (generic class names and the VOC palette unless given)."""
        return cls.default(**{k: getattr(config, k) for k in MODEL_FIELDS}, **kw)

    @classmethod
    def default(cls, variant: str, num_classes: int, **kw: Any) -> ModelCard:
        """A card with generic class names and the VOC palette (for untrained or synthetic models)."""
        kw.setdefault("class_names", tuple(f"class_{i}" for i in range(num_classes)))
        kw.setdefault("palette", voc_palette(num_classes))
        kw.setdefault("normalization", Normalization.preset("imagenet"))
        return cls(variant=variant, num_classes=num_classes, **kw)

    def output(self, kind: str) -> OutputSpec | None:
        return next((o for o in self.outputs if o.kind == kind), None)

    def replace(self, **changes: Any) -> ModelCard:
        return dataclasses.replace(self, **changes)

    # --- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples -> lists, plain JSON types

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model card") -> ModelCard:
        if not isinstance(d, dict):
            raise FcnDeployError(f"{source}: model card is not a JSON object")
        version = d.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise FcnDeployError(
                f"{source}: model card schema {version} is not supported (this fcn-deploy reads {SCHEMA_VERSION}); "
                "re-export the model with this version"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            kw = {k: v for k, v in d.items() if k in known}
            kw["normalization"] = Normalization(
                mean=tuple(kw["normalization"]["mean"]),
                std=tuple(kw["normalization"]["std"]),
                channel_order=kw["normalization"].get("channel_order", "RGB"),
                scale=float(kw["normalization"].get("scale", 1.0 / 255.0)),
            )
            kw["class_names"] = tuple(str(n) for n in kw["class_names"])
            kw["palette"] = tuple(tuple(int(c) for c in p) for p in kw["palette"])
            kw["outputs"] = tuple(OutputSpec(o["name"], o["kind"]) for o in kw.get("outputs", []))
            for key in ("min_shape", "opt_shape", "max_shape", "training_resolution"):
                if kw.get(key) is not None:
                    kw[key] = tuple(int(x) for x in kw[key])
            return cls(**kw)
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise FcnDeployError(f"{source}: malformed model card ({type(e).__name__}: {e})") from None
        except FcnDeployError as e:  # a field out of range (ModelConfig's check speaks of the CLI option)
            raise FcnDeployError(f"{source}: the model card holds {stored_value_problem(e)}; the file is damaged "
                                 "or not from fcn-deploy: re-export it") from None

    @classmethod
    def from_json(cls, text: str, source: str = "model card") -> ModelCard:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise FcnDeployError(f"{source}: model card is not valid JSON ({e})") from None
        return cls.from_dict(d, source)

    # --- ONNX metadata ---------------------------------------------------------------------------------
    def attach(self, model: Any) -> None:
        """Write this card into an onnx.ModelProto's metadata_props (replacing an older card)."""
        props = [p for p in model.metadata_props if p.key != METADATA_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(props)
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, self.to_json()

    @classmethod
    def from_onnx(cls, model: Any, source: str = "ONNX model") -> ModelCard:
        for p in model.metadata_props:
            if p.key == METADATA_KEY:
                return cls.from_json(p.value, source)
        raise FcnDeployError(
            f"{source}: has no fcn-deploy model card; export it with `fcn-deploy export` "
            "(or pass --mean/--std and --num-classes where the command offers them)"
        )
