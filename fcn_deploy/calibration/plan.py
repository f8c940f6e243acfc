"""The automatic INT8 precision plan (`quantize --int8 --auto`): which fused groups stay out of INT8, in FP16 for
`--target tensorrt` (strongly typed FP16 tensors, no Q/DQ around them) and in FP32 for `--target onnxruntime`.

1. Score full INT8 (the default lowering: the float ends and any --exclude already in FP32) on the plan images.
2. Measure every other group's sensitivity (calibration.sensitivity: alone-quantized and all-but views) and the
   share of FP32 CPU time its nodes take (ONNX Runtime's profiler).
3. Greedy: keep groups out of INT8 in order of sensitivity per unit of latency, sensitivity / (0.05 + time share), so
   of two groups that help alike the cheaper one goes first (if that order cannot meet the budget, again in order of
   sensitivity alone), re-measuring the whole model after each, until its
   drop is within the budget (its bootstrap upper bound: Measurement.bound). Then drop again every kept group the
   budget does not need (latest first).
4. No plan within budget (at least one Conv must stay INT8) -> a one-line FcnDeployError.
The kept groups are lowered unquantized (sensitivity.lower_variant, as every measured variant was); the plan is
recorded in the provenance.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fcn_deploy.calibration.fp16 import nonfinite_nodes
from fcn_deploy.calibration.images import ImageSet
from fcn_deploy.calibration.ranges import TensorRange
from fcn_deploy.calibration.sensitivity import (
    CONFIDENCE,
    JUDGE_VERSION,
    METRICS,
    Evaluator,
    Group,
    Measurement,
    PlanImages,
    Sensitivity,
    groups,
    higher_precision,
    lower_variant,
    measure_all,
    node_costs,
)
from fcn_deploy.core.atomic import write_text
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.preprocess import preprocess

log = logging.getLogger(__name__)

COST_FLOOR = 0.05  # latency share added to every group's before dividing: sensitivity still leads
NOISE = 1e-6  # drops at or below this (points) count as no effect


@dataclass
class Plan:
    metric: str
    max_drop: float
    images: int
    source: str
    miou_fp32: float | None
    full_int8: Measurement
    sensitivities: list[Sensitivity]
    precision: str = "fp32"  # of the kept groups: fp16 for TensorRT, fp32 for ONNX Runtime (higher_precision)
    kept: list[str] = field(default_factory=list)  # group names kept out of INT8, in the order chosen
    kept_nodes: list[str] = field(default_factory=list)
    final: Measurement | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    evaluations: int = 0
    judge: Evaluator | None = field(default=None, repr=False)  # scored the plan: the guard reuses its FP32 reference

    def to_dict(self) -> dict[str, Any]:
        ranked = sorted(self.sensitivities, key=lambda s: -s.score)
        return {
            "metric": self.metric, "max_drop": self.max_drop, "bound_confidence": CONFIDENCE,
            "plan_images": self.images, "plan_source": self.source,
            "miou_fp32": self.miou_fp32, "full_int8": self.full_int8.to_dict(),
            "final": self.final.to_dict() if self.final else None,
            "kept_groups": list(self.kept), "kept_nodes": list(self.kept_nodes), "kept_precision": self.precision,
            "kept_group_precision": {g: self.precision for g in self.kept},
            "kept_latency_share": sum(s.cost_share for s in self.sensitivities if s.group.name in self.kept),
            "steps": self.steps, "evaluations": self.evaluations,
            "sensitivity": [s.to_dict() for s in ranked],
        }  # fmt: skip


def best_method(
    fp32: Any,
    prepared: Any,
    by_method: dict[str, dict[str, TensorRange]],
    target: str,
    exclude: Sequence[str],
    images: ImageSet,
    size: tuple[int, int] | None,
    card: ModelCard,
    metric: str | None = None,
    weight_bits: int | None = None,
    say: Callable[[str], None] = log.info,
    rounded: dict[str, Any] | None = None,
) -> tuple[str, dict[str, TensorRange], dict[str, dict[str, Any]]]:
    """`--method best`: (method, its ranges, every method's measured full-INT8 drop) for the calibration method
    whose lowering (the default one, `exclude` in FP32) loses least on the held-out plan images, judged like the
    plan (the bound, then the drop; ties keep METHODS' order). Every method's thresholds come from one pass, so this
    costs one scoring per method. Which method wins is the model's and the target's: on the CamVid FCN-8s, percentile
    lost 0.80 points of mean IoU where entropy lost 1.01 (ORT flavour); TensorRT's entropy is no default to keep."""
    plan_images = PlanImages(images)
    metric = metric or ("miou" if plan_images.has_masks else "agreement")
    ev = None
    trials: dict[str, Measurement] = {}
    for method, ranges in by_method.items():
        if ev is None:
            ev = Evaluator(fp32, prepared, ranges, target, plan_images, size, card, metric, weight_bits, rounded)
        ev.ranges = ranges
        trials[method] = ev.measure(sorted(set(exclude)))
    chosen = min(trials, key=lambda m: (trials[m].judged, trials[m].drop))
    say(f"  calibration method: {chosen} (full INT8 drops " + ", ".join(
        f"{m} {t.drop:.2f} (up to {t.judged:.2f})" for m, t in trials.items()) +
        f" points of {metric} on {len(plan_images)} held-out calibration images)")  # fmt: skip
    return chosen, by_method[chosen], {m: t.to_dict() for m, t in trials.items()}


def priority(s: Sensitivity) -> float:
    return s.score / (COST_FLOOR + s.cost_share)


def search(
    fp32: Any,
    prepared: Any,
    ranges: dict[str, TensorRange],
    target: str,
    base_exclude: Sequence[str],
    images: ImageSet,
    size: tuple[int, int] | None,
    card: ModelCard,
    max_drop: float,
    metric: str | None = None,
    say: Callable[[str], None] = log.info,
    cache: Path | None = None,
    cache_key: dict[str, Any] | None = None,
    weight_bits: int | None = None,
    rounded: dict[str, Any] | None = None,
) -> Plan:
    """The plan for `prepared` (the calibrated FP32 graph quantize lowers); `fp32` is the FP32 model (path/bytes).

    cache: a JSON file of the measured sensitivities, reused when `cache_key` (what determines them: the
    calibration cache key, target, exclusions, plan images, metric, size) matches; the greedy steps always re-run.
    """
    if max_drop < 0:
        raise FcnDeployError(f"--max-drop {max_drop}: must be 0 or more (points of {metric or 'the metric'})")
    plan_images = PlanImages(images)
    metric = metric or ("miou" if plan_images.has_masks else "agreement")
    if metric not in METRICS:
        raise FcnDeployError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    ev = Evaluator(fp32, prepared, ranges, target, plan_images, size, card, metric, weight_bits, rounded)
    base = sorted(set(base_exclude))
    full = ev.measure(base)
    say(f"  auto plan on {len(plan_images)} held-out calibration images ({metric}): full INT8 drops "
        f"{full.drop:.2f} points (up to {full.judged:.2f}, {CONFIDENCE:.0%} bound), budget {max_drop:g}")
    candidates = [g for g in groups(prepared) if g.name not in set(base)]
    key = {**(cache_key or {}), "target": target, "weight_bits": weight_bits, "gptq": bool(rounded),
           "kept_precision": higher_precision(target),
           "base_exclude": base, "plan_ids": list(images.ids), "metric": metric, "judge": JUDGE_VERSION,
           "size": list(size) if size else None, "groups": [list(g.nodes) for g in candidates]}  # fmt: skip
    sens = _load_cached(cache, key, candidates, full) if cache else None
    if sens is None:
        costs = node_costs(prepared, preprocess(plan_images[0][0], card.normalization, size), card.input_name)
        sens = measure_all(ev, candidates, base, full, costs, say)
        if cache:
            write_text(cache, json.dumps({"key": key, "sensitivity": [x.to_dict() for x in sens]}, indent=1) + "\n")
    else:
        say(f"  sensitivity cache {cache} matches: {len(sens)} groups not measured again")
    plan = Plan(metric, max_drop, len(plan_images), plan_images.source, ev.miou_fp32, full, sens,
                higher_precision(target))  # fmt: skip
    plan.steps.append({"kept": [], **full.to_dict()})

    convs = {g.name for g in candidates if g.op_type in ("Conv", "ConvTranspose")}
    ranked = [s for s in sens if s.score > NOISE]
    cost_aware = sorted(ranked, key=lambda s: -priority(s))
    by_sensitivity = sorted(ranked, key=lambda s: -s.score)
    current, kept = full, []
    # Cheap groups first; should that order end over budget (a cheap, weak group took the place of the one Conv
    # that must stay INT8), sensitivity alone decides: preferring cheap layers is a preference, never a reason to
    # fail.
    for order in (cost_aware, by_sensitivity) if cost_aware != by_sensitivity else (cost_aware,):
        if order is by_sensitivity:
            say("  plan: over budget with cheap groups first; again from full INT8, most sensitive first")
            plan.steps.append({"kept": [], **full.to_dict(), "restart": "by sensitivity"})
        current, kept = _greedy(ev, order, base, full, max_drop, convs, plan, say)
        if current.judged <= max_drop:
            break
    if current.judged > max_drop:
        raise FcnDeployError(
            f"--auto: no INT8 plan meets --max-drop {max_drop:g} ({metric}) on {len(plan_images)} held-out "
            f"calibration images: full INT8 drops {full.drop:.2f} points and keeping {len(kept)} of "
            f"{len(candidates)} groups in {plan.precision.upper()} still {current.drop:.2f} (up to "
            f"{current.judged:.2f}, {CONFIDENCE:.0%} bound); raise --max-drop, "
            "use --fp16, or quantize without --auto"
        )
    for s in reversed(list(kept)):  # prune: a group the budget does not need goes back to INT8
        if len(kept) < 2:
            break
        trial = [k for k in kept if k is not s]
        m = ev.measure(base, _nodes(trial))
        if m.judged <= max_drop:
            kept, current = trial, m
            plan.steps.append({"kept": [k.group.name for k in kept], **m.to_dict(), "pruned": s.group.name})
            say(f"  plan prune: {s.group.name} back to INT8 -> drop {m.drop:.2f} (up to {m.judged:.2f}) points")
    plan.kept = [k.group.name for k in kept]
    plan.kept_nodes = _nodes(kept)
    plan.final = current
    plan.evaluations = ev.evaluations
    plan.judge = ev
    say(f"  auto plan: {len(kept)} group(s) in {plan.precision.upper()} ({', '.join(plan.kept) or 'none'}), "
        f"drop {current.drop:.2f} (up to {current.judged:.2f}) "
        f"points on the plan images ({ev.evaluations} lowered models scored)")
    return plan


def _greedy(ev: Evaluator, order: Sequence[Sensitivity], base: list[str], full: Measurement, max_drop: float,
            convs: set[str], plan: Plan, say: Callable[[str], None]) -> tuple[Measurement, list[Sensitivity]]:  # fmt: skip
    """Keep groups out of INT8 in `order`, re-measuring after each, until the judged drop is within budget."""
    current = full
    kept: list[Sensitivity] = []
    for s in order:
        if current.judged <= max_drop:
            break
        if s.group.op_type in ("Conv", "ConvTranspose") and convs <= {k.group.name for k in kept} | {s.group.name}:
            continue  # at least one Conv/ConvTranspose must stay INT8, else this is no INT8 model
        kept.append(s)
        current = ev.measure(base, _nodes(kept))
        plan.steps.append({"kept": [k.group.name for k in kept], **current.to_dict()})
        say(f"  plan step {len(kept)}: + {s.group.name} in {plan.precision.upper()} -> drop {current.drop:.2f} "
            f"(up to {current.judged:.2f}) points")
    return current, kept


def lower_plan(prepared: Any, tensor_ranges: dict, target: str, exclude: list[str], higher: list[str],
                bits: int, reader: Callable[[], Any],
                rounded: dict[str, Any] | None = None) -> tuple[Any, list[str], list[str]]:  # fmt: skip
    """(INT8 graph, nodes in FP32, nodes in FP16): the --auto plan's kept nodes (`higher`) in FP16 for TensorRT,
    as the plan measured them, unless FP16 overflows on the plan images: then they stay FP32 (warned)."""
    lowered = lower_variant(prepared, tensor_ranges, target, exclude, higher, bits, rounded)
    if not higher or higher_precision(target) != "fp16":
        return lowered, sorted(set(exclude) | set(higher)), []

    def feeds():
        r = reader()
        while (f := r.get_next()) is not None:
            yield f

    bad = nonfinite_nodes(lowered, feeds())
    if not bad:
        return lowered, sorted(exclude), sorted(higher)
    log.warning("warning: the --auto plan's FP16 groups overflow at %s on the plan images; keeping them in FP32",
                ", ".join(bad[:3]))
    return lower_variant(prepared, tensor_ranges, target, [*exclude, *higher], (), bits, rounded), \
        sorted(set(exclude) | set(higher)), []


def _load_cached(path: Path, key: dict[str, Any], candidates: Sequence[Group],
                 full: Measurement) -> list[Sensitivity] | None:  # fmt: skip
    """The cached sensitivities when the file exists and its key equals `key` (else None: measure again)."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("%s: unreadable sensitivity cache; measuring again", path)
        return None
    if not isinstance(doc, dict) or doc.get("key") != json.loads(json.dumps(key)):
        log.warning("%s: sensitivity cache is for another model, calibration or plan; measuring again", path)
        return None
    by_name = {g.name: g for g in candidates}
    out = []
    for d in doc.get("sensitivity", []):
        g = by_name[d["group"]]
        only, all_but = (Measurement(**d[k]) for k in ("only_quantized", "all_but_quantized"))
        out.append(Sensitivity(g, only, all_but, d["latency_share"], gain=full.drop - all_but.drop))
    return out


def _nodes(kept: Sequence[Sensitivity]) -> list[str]:
    return sorted({n for k in kept for n in k.group.nodes})
