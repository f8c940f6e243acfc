"""The INT8 guard: every INT8 lowering (with --auto or not) measures what it is about to write against the FP32
model on calibration images held out from the activation ranges (the --auto plan images; as many are held out for
the guard alone without --auto), with the one core.scoring.score (through sensitivity.Judge). Past --max-drop it
warns in one line suggesting --auto; with --strict it raises instead, before anything is written. The budget is
judged on the drop's bootstrap upper bound (sensitivity.Measurement.bound), as the --auto plan is.

Cheap by design: one FP32 and one INT8 scoring of at most --plan-images (32) images at the calibration size; with
--auto the plan's own Judge is reused, so the FP32 reference is not scored twice; with --cache FILE the measurement
is kept in FILE.guard.json and reused while the lowered graph, the FP32 model, the images, metric and size match.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from fcn_deploy.calibration.images import ImageSet
from fcn_deploy.calibration.sensitivity import CONFIDENCE, JUDGE_VERSION, Judge, PlanImages
from fcn_deploy.core.atomic import sha256_file, write_text
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError

log = logging.getLogger(__name__)

METRIC_NAMES = {"miou": "mean IoU", "agreement": "pixel agreement"}


def default_metric(images: ImageSet, metric: str | None) -> str:
    """--metric as given, else mean IoU where every held-out image has a mask, else agreement with FP32."""
    return metric or ("miou" if images.has_masks else "agreement")


def measure(fp32: str | Path | bytes, lowered: bytes, images: ImageSet | None, size: tuple[int, int] | None,
            card: ModelCard, metric: str | None, max_drop: float, asked: int,
            judge: Judge | None = None, cache: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """The guard's record (provenance `guard`): the measured drop in points and whether it is within max_drop."""
    if images is None or not len(images):
        return {"measured": False, "images_asked": asked, "max_drop": max_drop,
                "reason": "fewer than 2 calibration images: none could be held out from the ranges"}  # fmt: skip
    metric = judge.metric if judge is not None else default_metric(images, metric)
    parent = sha256_file(fp32) if isinstance(fp32, str | Path) else hashlib.sha256(fp32).hexdigest()
    key = {"lowered": hashlib.sha256(lowered).hexdigest(), "fp32": parent, "images": list(images.ids),
           "metric": metric, "judge": JUDGE_VERSION, "size": list(size) if size else None,
           "normalization": [list(card.normalization.mean), list(card.normalization.std)]}  # fmt: skip
    key = json.loads(json.dumps(key))  # as it reads back
    measured = _cached(cache, key) if cache else None
    if measured is None:
        if judge is None:
            judge = Judge(fp32, PlanImages(images), size, card, metric)
        m = judge.measure_bytes(lowered)
        measured = {"metric": metric, "drop": m.drop, "bound": m.bound, "net": m.net, "miou": m.miou,
                    "miou_fp32": judge.miou_fp32,
                    "agreement": m.agreement, "images": len(judge.images), "source": judge.images.source}  # fmt: skip
        if cache:
            write_text(cache, json.dumps({"key": key, "measured": measured}, indent=1) + "\n")
    return {"measured": True, **measured, "max_drop": max_drop, "images_asked": asked,
            "within_budget": measured.get("bound", measured["drop"]) <= max_drop}  # fmt: skip


def _cached(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        log.warning("%s: unreadable INT8 guard cache; measuring again", path)
        return None
    if isinstance(doc, dict) and doc.get("key") == key and isinstance(doc.get("measured"), dict):
        log.info("INT8 guard cache %s matches: not scored again", path)
        return doc["measured"]
    return None


def enforce(record: dict[str, Any], output: Path, strict: bool, auto: bool) -> None:
    """Warn (one line) or, with strict, raise when the guard measured a drop past the budget."""
    if not record.get("measured"):
        log.warning("warning: %s: INT8 not checked against FP32 (%s)", output, record["reason"])
        return
    if record["within_budget"]:
        return
    bound = record.get("bound") or record["drop"]
    net = (f" where it changes pixels (net {record['net']:.2f}, counting those it fixes)"
           if record.get("net") is not None else "")
    what = (f"INT8 loses {record['drop']:.2f} points of {METRIC_NAMES[record['metric']]}{net} against FP32 on "
            f"{record['images']} held-out calibration images (up to {bound:.2f} at {CONFIDENCE:.0%} confidence), over "
            f"--max-drop {record['max_drop']:g}")  # fmt: skip
    fix = ("raise --max-drop or use --fp16" if auto
           else "rerun with --auto to keep the sensitive layers in higher precision")
    if strict:
        raise FcnDeployError(f"{output}: not written (--strict): {what}; {fix}")
    log.warning("warning: %s: %s; %s (--strict makes this an error)", output, what, fix)
