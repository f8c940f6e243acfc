"""Calibration cache: per-tensor ranges saved with the key of everything that produced them.

A matching cache skips calibration; a cache made from anything else is refused with the fields that differ
(never silently reused, never silently overwritten). The ranges do not depend on the target, so one cache serves
`--target tensorrt` and `--target onnxruntime`. A `--method best` cache holds every method's ranges (`ranges` is
then method -> tensor -> range): which one wins depends on the target, so it is chosen again on each use.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fcn_deploy.calibration.ranges import BEST, METHODS, TensorRange
from fcn_deploy.core.atomic import write_text
from fcn_deploy.core.errors import FcnDeployError

CACHE_FORMAT = "fcn-deploy.calibration-cache"
CACHE_VERSION = 1


@dataclass(frozen=True)
class CacheKey:
    onnx_sha256: str
    images: str  # ImageSet.fingerprint: ids + pixels of every calibration image
    preprocessing: dict[str, Any]  # the model card's Normalization as a dict
    method: str
    num_images: int
    shapes: tuple[tuple[int, int] | None, ...]
    statistic: str = "int8"  # what the ranges are for (int8 thresholds, fp16 activation maxima)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _describe(field: str, old: Any, new: Any) -> str:
    if isinstance(old, str) and isinstance(new, str) and len(old) == 64 and len(new) == 64:
        return f"{field} ({old[:12]}... -> {new[:12]}...)"
    return f"{field} ({old} -> {new})"


Ranges = dict[str, TensorRange]  # tensor -> range; for --method best: method -> Ranges


def _parse(doc: dict[str, Any], by_method: bool) -> Any:
    def one(ranges: dict[str, Any]) -> Ranges:
        return {name: TensorRange(float(r["min"]), float(r["max"]), float(r["amax"])) for name, r in ranges.items()}

    return {m: one(r) for m, r in doc["ranges"].items()} if by_method else one(doc["ranges"])


def load(path: Path, key: CacheKey) -> Any:
    """The cached ranges (method -> Ranges for --method best, else Ranges) when `path` was made with `key`; None
    when there is no cache yet."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != CACHE_FORMAT:
            raise ValueError("not a calibration cache")
        cached_key = doc["key"]
        if not isinstance(cached_key, dict):
            raise ValueError(f"its key is a {type(cached_key).__name__}, not an object")
        ranges = _parse(doc, cached_key.get("method") == BEST)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise FcnDeployError(
            f"{path}: not a readable fcn-deploy calibration cache ({e}); delete it or pass another --cache"
        ) from None
    if doc.get("version") != CACHE_VERSION:
        raise FcnDeployError(f"{path}: calibration cache version {doc.get('version')} is not {CACHE_VERSION}; "
                             "delete it to recalibrate")
    new = key.to_dict()
    changed = [_describe(f, cached_key.get(f), new[f]) for f in new if cached_key.get(f) != new[f]]
    if not changed and key.method == BEST and set(ranges) != set(METHODS):
        changed = [f"set of methods ({', '.join(ranges)} -> {', '.join(METHODS)})"]
    if changed:
        raise FcnDeployError(
            f"{path}: stale calibration cache, made with a different {', '.join(changed)}; "
            "delete it to recalibrate or pass another --cache"
        )
    return ranges


def save(path: Path, key: CacheKey, ranges: Any) -> None:
    """`ranges`: Ranges, or method -> Ranges when key.method is BEST."""

    def plain(r: Ranges) -> dict[str, Any]:
        return {name: x.to_dict() for name, x in sorted(r.items())}

    doc = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "key": key.to_dict(),
        "key_sha256": key.digest(),
        "ranges": {m: plain(r) for m, r in ranges.items()} if key.method == BEST else plain(ranges),
    }
    write_text(path, json.dumps(doc, indent=1) + "\n")
