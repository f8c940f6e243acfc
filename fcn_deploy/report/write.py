"""Writing a report: `report.md` (table sorted by latency), `report.json`, `report.csv`; each file atomically.

A row is a plain JSON-ready dict. Required keys (the contract other tools read): backend, precision, size,
status ("ok" | "skipped" | "failed"), mean_iou, pixel_accuracy, agreement_with_fp32, latency_ms_median,
latency_ms_p95, model_bytes; plus reason (why skipped/failed), mean_accuracy, fw_iou, per_class_iou, model.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fcn_deploy.core.atomic import write_text

ROW_KEYS = (
    "backend",
    "precision",
    "size",
    "status",
    "reason",
    "mean_iou",
    "pixel_accuracy",
    "mean_accuracy",
    "fw_iou",
    "agreement_with_fp32",
    "latency_ms_median",
    "latency_ms_p95",
    "model_bytes",
    "model",
)
STATUSES = ("ok", "skipped", "failed")


def make_row(backend: str, precision: str, size: str, status: str = "ok", reason: str = "", **values: Any) -> dict:
    """A row with every ROW_KEY present (None where not measured)."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} not in {STATUSES}")
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(backend=backend, precision=precision, size=size, status=status, reason=reason)
    row.update(values)
    row.setdefault("per_class_iou", None)
    return row


def sort_rows(rows: Sequence[dict]) -> list[dict]:
    """Measured rows by median latency (fastest first), then skipped/failed rows in their given order."""
    def key(item: tuple[int, dict]) -> tuple:
        i, r = item
        lat = r.get("latency_ms_median")
        measured = r["status"] == "ok" and lat is not None
        return (0 if measured else 1, lat if measured else 0.0, i)

    return [r for _, r in sorted(enumerate(rows), key=key)]


DROP_BUDGET = 0.01  # the mean IoU a row may lose against the FP32 ONNX Runtime row at its size (1 point)


def miou_drops(rows: Sequence[dict]) -> dict[int, float]:
    """id(row) -> FP32 ONNX Runtime mean IoU at the row's size minus the row's own, for every measured row."""
    ref = {r["size"]: r["mean_iou"] for r in rows if r["status"] == "ok" and r["backend"] == "onnxruntime"
           and r["precision"] == "fp32" and r.get("mean_iou") is not None}  # fmt: skip
    return {id(r): ref[r["size"]] - r["mean_iou"] for r in rows
            if r["status"] == "ok" and r.get("mean_iou") is not None and r["size"] in ref}  # fmt: skip


def over_budget(rows: Sequence[dict], budget: float = DROP_BUDGET) -> set[int]:
    """id(row) of every measured row that lost more than `budget` mean IoU against FP32."""
    return {i for i, d in miou_drops(rows).items() if d > budget + 1e-12}


def best_within_budget(rows: Sequence[dict], budget: float = DROP_BUDGET) -> dict | None:
    """The fastest measured deployable row (an ONNX or engine file, not the PyTorch checkpoint) whose mean IoU
    is within `budget` of FP32; None when no row qualifies."""
    drops = miou_drops(rows)
    ok = [r for r in sort_rows(rows) if r["backend"] != "torch" and id(r) in drops and drops[id(r)] <= budget + 1e-12
          and r.get("model")]  # fmt: skip
    return ok[0] if ok else None


def _drop(v: float | None) -> str:
    if v is None:
        return "-"
    change = -100 * v
    return f"{0.0 if abs(change) < 0.005 else change:+.2f}"  # never "-0.00"


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _mb(v: int | None) -> str:
    return "-" if v is None else f"{v / 1e6:.2f}"


def _load(avg: list[float] | None) -> str:
    return "unknown" if not avg else " / ".join(f"{v:.1f}" for v in avg)


def _status(r: dict) -> str:
    return r["status"] if not r.get("reason") else f"{r['status']}: {r['reason']}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[dict], budget: float = DROP_BUDGET) -> str:
    """Rows by latency; a row that lost more than `budget` mean IoU against FP32 is flagged in its status."""
    head = (
        "| backend | precision | size | status | mean IoU % | vs FP32 pts | pixel acc % | mean acc % | fw IoU % | "
        "agreement with FP32 % | median ms | p95 ms | model MB |"
    )
    drops, over = miou_drops(rows), over_budget(rows, budget)
    lines = [head, "|" + "---|" * 13]
    for r in sort_rows(rows):
        status = _status(r) + (f" **OVER BUDGET** (> {100 * budget:g} pts lost)" if id(r) in over else "")
        cells = [
            r["backend"], r["precision"], r["size"], status, _pct(r.get("mean_iou")), _drop(drops.get(id(r))),
            _pct(r.get("pixel_accuracy")), _pct(r.get("mean_accuracy")), _pct(r.get("fw_iou")),
            _pct(r.get("agreement_with_fp32")), _ms(r.get("latency_ms_median")), _ms(r.get("latency_ms_p95")),
            _mb(r.get("model_bytes")),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def per_class_table(rows: Sequence[dict], class_names: Sequence[str]) -> str:
    measured = [r for r in sort_rows(rows) if r["status"] == "ok" and r.get("per_class_iou")]
    if not measured:
        return ""
    labels = [f"{r['backend']} {r['precision']} {r['size']}" for r in measured]
    lines = ["| class | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    for name in class_names:
        lines.append(
            f"| {_cell(name)} | " + " | ".join(_pct(r["per_class_iou"].get(name)) for r in measured) + " |"
        )
    return "\n".join(lines)


def render_markdown(rows: Sequence[dict], meta: dict[str, Any]) -> str:
    env = meta.get("environment", {})
    parts = [
        "# fcn-deploy accuracy / latency report",
        "",
        f"- model: `{meta.get('model')}`",
        f"- data: {meta.get('dataset')} split `{meta.get('split')}`, {meta.get('num_images')} images",
        f"- FP32 reference for agreement: {meta.get('reference')}",
        f"- latency: batch 1, {meta.get('latency_method', 'wall time of one inference call')}",
        f"- machine: {env.get('cpu_model')} ({env.get('cpu_threads_available')} threads available), "
        f"GPU: {(env.get('gpu') or {}).get('name', 'none')}, TensorRT: {env.get('tensorrt') or 'not installed'}, "
        f"PyTorch threads {(env.get('thread_env') or {}).get('torch_intra_op', '-')}, "
        f"load average at the end {_load(env.get('load_average'))} (other work on the machine inflates latency)",
        "",
        f"Metrics are percentages; rows are sorted by median latency. `vs FP32 pts` is the mean IoU change against "
        f"ONNX Runtime FP32 at the same size; a row that loses more than {100 * meta.get('drop_budget', DROP_BUDGET):g} "
        "point(s) is marked **OVER BUDGET**. Skipped and failed rows say why.",
        "",
        markdown_table(rows, meta.get("drop_budget", DROP_BUDGET)),
        "",
    ]
    per_class = per_class_table(rows, meta.get("class_names", ()))
    if per_class:
        parts += ["## Per-class IoU %", "", per_class, ""]
    files = meta.get("files")
    if files:
        parts += ["## Files", ""] + [f"- `{f}`" for f in files] + [""]
    return "\n".join(parts)


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def render_json(rows: Sequence[dict], meta: dict[str, Any]) -> str:
    drops, over = miou_drops(rows), over_budget(rows, meta.get("drop_budget", DROP_BUDGET))
    flagged = [{**r, "miou_drop_vs_fp32": drops.get(id(r)), "over_budget": id(r) in over} for r in sort_rows(rows)]
    doc = {"schema": "fcn-deploy-report/1", "meta": meta, "rows": flagged}
    return json.dumps(_json_safe(doc), indent=2, allow_nan=False) + "\n"


def render_csv(rows: Sequence[dict], class_names: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*ROW_KEYS, *(f"iou_{n}" for n in class_names)])
    for r in sort_rows(rows):
        per_class = r.get("per_class_iou") or {}
        values = [r.get(k) for k in ROW_KEYS] + [per_class.get(n) for n in class_names]
        writer.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values])
    return buf.getvalue()


def write_report(output: Path, rows: Sequence[dict], meta: dict[str, Any]) -> dict[str, Path]:
    """report.md, report.json, report.csv in `output` (each atomically). Returns name -> path."""
    output = Path(output)
    names = meta.get("class_names", ())
    paths = {"json": output / "report.json", "csv": output / "report.csv", "md": output / "report.md"}
    write_text(paths["json"], render_json(rows, meta))
    write_text(paths["csv"], render_csv(rows, names))
    write_text(paths["md"], render_markdown(rows, meta))
    return paths
