"""`LoweredOnnx`: FP32 ONNX -> FP16 or INT8 (Q/DQ, TensorRT or ONNX Runtime flavour) ONNX through
fcn_deploy.calibration.api.quantize, reused when `provenance.lowering` names this parent (sha256) and these
options. An option the lowering does not record (exclusions, seed, ...) cannot be shown to match, so a step that
sets one always lowers again."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fcn_deploy.calibration.api import QuantizeConfig, default_output, resolve_method, resolve_rounding
from fcn_deploy.chain.artifact import Artifact, Parent, Progress, plain, replacing, resolve, to_stderr
from fcn_deploy.core.atomic import sha256_file
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.onnx_io import load_onnx

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(QuantizeConfig) if f.default is not dataclasses.MISSING}
CALIBRATION_FIELDS = tuple(k for k in _DEFAULTS if k not in ("output", "target"))
# Options mismatch() checks against the lowering's provenance, and options that do not change the lowered graph;
# any other option (exclusions, seed, float ends, mean/std) is not recorded, so a step that sets one lowers again.
CHECKED = ("calib_data", "calib_dataset", "data_root", "calib_video", "num_images", "method", "calib_shapes",
           "fp16_max_activation", "auto", "max_drop", "metric", "plan_images", "strict", "weight_bits",
           "weight_rounding")  # fmt: skip
NO_EFFECT = ("cache", "eval_images", "latency_runs", "latency_shape")


def calibration_source(calibration: Mapping[str, Any]) -> str | None:
    """The `calibration_source` a lowering with these options records (fcn_deploy.calibration.images' names)."""
    from fcn_deploy.calibration.images import parse_dataset_spec

    if calibration.get("calib_dataset"):
        name, split = parse_dataset_spec(calibration["calib_dataset"])
        root = calibration.get("data_root")
        return f"{name}:{split}" + (f"@{Path(root).resolve()}" if root else "")
    for key, kind in (("calib_data", "folder"), ("calib_video", "video")):
        if calibration.get(key):
            return f"{kind}:{Path(calibration[key]).resolve()}"
    return None


class LoweredOnnx:
    """`output` None: a transient file in the caller's scratch folder (build-engine without --keep-onnx)."""

    def __init__(self, parent: Parent, precision: str, output: Path | None = None, *, target: str = "tensorrt",
                 calibration: Mapping[str, Any] | None = None, reuse: bool = True,
                 say: Progress = to_stderr) -> None:  # fmt: skip
        self.parent, self.precision, self.target = parent, precision, target
        self.output = Path(output) if output is not None else None
        self.calibration = {k: v for k, v in (calibration or {}).items() if v is not None}
        unknown = sorted(set(self.calibration) - set(CALIBRATION_FIELDS))
        if unknown:
            raise FcnDeployError(f"lowering options {unknown}: unknown; choose from {', '.join(CALIBRATION_FIELDS)}")
        self.reuse, self.say = reuse, say
        self._made: Artifact | None = None

    def given(self) -> dict[str, Any]:
        """The calibration options that differ from quantize's defaults (what a rebuild command must repeat)."""
        return {k: v for k, v in self.calibration.items() if v != _DEFAULTS.get(k)}

    def record(self) -> dict[str, Any]:
        return plain({"precision": self.precision, "target": self.target, **self.given()})

    def mismatch(self, lowered: Path, parent: Path) -> str | None:
        """Why the file at `lowered` is not this step's output for `parent`, or None when it is."""
        try:
            card = ModelCard.from_onnx(load_onnx(lowered), str(lowered))
        except FcnDeployError as e:
            return str(e)
        rec = card.provenance.get("lowering") or {}
        if rec.get("parent_onnx_sha256") != sha256_file(parent):
            return "lowered from another parent"
        options = {**_DEFAULTS, **self.calibration}
        wanted = {"precision": self.precision, "calibration_source": calibration_source(options)}
        if self.precision == "int8":
            from fcn_deploy.calibration.int8 import choose_weight_bits

            wanted.update(target=self.target, method=resolve_method(options.get("method"), bool(options.get("auto"))),
                          weight_bits=choose_weight_bits(self.target, options.get("weight_bits"))[0])
            wanted["auto"], rec = bool(options.get("auto")), {**rec, "auto": bool(rec.get("auto"))}
            wanted["weight_rounding"] = resolve_rounding(options.get("weight_rounding"), wanted["auto"])
            # the INT8 budget, recorded by the --auto plan (fcn_deploy.calibration.plan) or else by the guard
            # (fcn_deploy.calibration.guard); both judge on images held out from the ranges
            auto = bool(options.get("auto"))
            budget = rec.get("auto_plan" if auto else "guard") or {}
            rec.update(max_drop=budget.get("max_drop"), metric=budget.get("metric"),
                       plan_images=budget.get("plan_images_asked" if auto else "images_asked"))
            wanted.update(max_drop=options["max_drop"], plan_images=options["plan_images"])
            if options.get("metric"):
                wanted["metric"] = options["metric"]
            if options.get("strict") and (rec.get("guard") or {}).get("within_budget") is False:
                return "it failed its INT8 budget (--strict)"
        else:
            wanted["fp16_max_activation"] = options["fp16_max_activation"]
        wanted["num_images"] = options["num_images"]
        if options.get("calib_shapes"):
            wanted["shapes"] = plain(options["calib_shapes"])
        for key, value in wanted.items():
            if plain(rec.get(key)) != plain(value):
                return f"{key} {rec.get(key)!r} != {value!r}"
        unrecorded = set(self.given()) - set(CHECKED) - set(NO_EFFECT)
        return f"{', '.join(sorted(unrecorded))} not recorded" if unrecorded else None

    def __call__(self, scratch: Path | None = None) -> Artifact:
        if self._made is not None:
            return self._made
        parent = resolve(self.parent, scratch)
        output = self.output
        if output is None:
            if scratch is None:
                raise FcnDeployError(f"{parent}: a transient {self.precision} ONNX needs a scratch folder")
            output = scratch / default_output(parent, self.precision).name
        why = self.mismatch(output, parent) if output.is_file() else None
        if self.reuse and output.is_file() and why is None:
            self.say(f"  reusing {output}")
            self._made = Artifact(output, reused=True)
            return self._made
        if output.is_file():
            self.say(replacing(output, why or "an earlier lowering"))
        from fcn_deploy.calibration.api import quantize

        self.say(f"  lowering {parent} to {self.precision} ({self.target}) -> {output}")
        t = time.perf_counter()
        result = quantize(QuantizeConfig(model=parent, precision=self.precision, output=output, target=self.target,
                                         **self.calibration))  # fmt: skip
        self.say(f"  {result.output} written in {time.perf_counter() - t:.1f} s")
        self._made = Artifact(Path(result.output), reused=False, result=result)
        return self._made
