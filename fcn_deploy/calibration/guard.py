"""The INT8 guard: every INT8 lowering (with --auto or not) measures what it is about to write against the FP32
model on calibration images held out from the activation ranges (the --auto plan images; as many are held out for
the guard alone without --auto), with the one core.scoring.score (through sensitivity.Judge). Past --max-drop it
warns in one line suggesting --auto; with --strict it raises instead, before anything is written.

Cheap by design: one FP32 and one INT8 scoring of at most --plan-images (32) images at the calibration size; with
--auto the plan's own Judge is reused, so the FP32 reference is not scored twice.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fcn_deploy.calibration.images import ImageSet
from fcn_deploy.calibration.sensitivity import Judge, PlanImages
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError

log = logging.getLogger(__name__)

METRIC_NAMES = {"miou": "mean IoU", "agreement": "pixel agreement"}


def default_metric(images: ImageSet, metric: str | None) -> str:
    """--metric as given, else mean IoU where every held-out image has a mask, else agreement with FP32."""
    return metric or ("miou" if images.has_masks else "agreement")


def measure(fp32: str | Path | bytes, lowered: bytes, images: ImageSet | None, size: tuple[int, int] | None,
            card: ModelCard, metric: str | None, max_drop: float, asked: int,
            judge: Judge | None = None) -> dict[str, Any]:  # fmt: skip
    """The guard's record (provenance `guard`): the measured drop in points and whether it is within max_drop."""
    if images is None or not len(images):
        return {"measured": False, "images_asked": asked, "max_drop": max_drop,
                "reason": "fewer than 2 calibration images: none could be held out from the ranges"}  # fmt: skip
    if judge is None:
        judge = Judge(fp32, PlanImages(images), size, card, default_metric(images, metric))
    m = judge.measure_bytes(lowered)
    return {"measured": True, "metric": judge.metric, "max_drop": max_drop, "drop": m.drop, "miou": m.miou,
            "miou_fp32": judge.miou_fp32, "agreement": m.agreement, "images": len(judge.images),
            "images_asked": asked, "source": judge.images.source, "within_budget": m.drop <= max_drop}  # fmt: skip


def enforce(record: dict[str, Any], output: Path, strict: bool, auto: bool) -> None:
    """Warn (one line) or, with strict, raise when the guard measured a drop past the budget."""
    if not record.get("measured"):
        log.warning("warning: %s: INT8 not checked against FP32 (%s)", output, record["reason"])
        return
    if record["within_budget"]:
        return
    what = (f"INT8 loses {record['drop']:.2f} points of {METRIC_NAMES[record['metric']]} against FP32 on "
            f"{record['images']} held-out calibration images, over --max-drop {record['max_drop']:g}")  # fmt: skip
    fix = ("raise --max-drop or use --fp16" if auto
           else "rerun with --auto to keep the sensitive layers in higher precision")
    if strict:
        raise FcnDeployError(f"{output}: not written (--strict): {what}; {fix}")
    log.warning("warning: %s: %s; %s (--strict makes this an error)", output, what, fix)
