"""The picture of an `--auto` INT8 plan (`MODEL.plan.png`), drawn from `Plan.to_dict()` alone.

Three panels share one row per fused group, most sensitive first: the two sensitivity views (points lost when the
group is the only one quantized; points won back when it is the only one kept out of INT8), its share of FP32 CPU
time, and the search's steps (drop after each, against the budget). Groups the plan keeps out of INT8 are marked
in every panel, in its `kept_precision` (FP16 for TensorRT, FP32 for ONNX Runtime; FP32 in plans older than it).
matplotlib is optional: without it the picture is skipped with one info line.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fcn_deploy.core.atomic import write_bytes

log = logging.getLogger(__name__)

DPI = 100
WIDTH_IN = 13.0
ROW_IN = 0.28  # height per group row
FRAME_IN = 1.9  # title, axis labels and legend around the rows
MIN_HEIGHT_IN = 4.5
TITLE_NAMES_MAX = 90  # characters of kept group names the title lists
KEPT = "#ff7f0e"  # a group kept out of INT8 (orange: neither of the two view colours)
ALONE, ALL_BUT, COST = "#d62728", "#1f77b4", "#7f7f7f"


@dataclass(frozen=True)
class PlanRows:
    """What the picture shows, in drawing order (top row first)."""

    names: list[str]
    kept: list[bool]
    alone_drop: list[float]  # points lost with only this group quantized
    recovered: list[float]  # full-INT8 drop minus the drop with all but this group quantized
    latency_pct: list[float]
    steps: list[tuple[str, float]]  # (what the step did, drop after it)
    precision: str = "FP32"  # of the kept groups
    confidence: float = 0.9  # of the bounds
    bounds: list[float | None] = field(default_factory=list)  # each step's upper bound (judged against the budget)

    def size_px(self) -> tuple[int, int]:
        """(width, height) of the PNG: a fixed width, one row height per group."""
        return round(WIDTH_IN * DPI), round(height_in(len(self.names)) * DPI)


def height_in(groups: int) -> float:
    return max(MIN_HEIGHT_IN, FRAME_IN + ROW_IN * max(groups, 1))


def plan_rows(plan: dict[str, Any]) -> PlanRows:
    """The rows of `plan` (a Plan.to_dict()): its `sensitivity` list is already most sensitive first."""
    sens: Sequence[dict[str, Any]] = plan.get("sensitivity") or []
    kept = set(plan.get("kept_groups") or [])
    steps: list[tuple[str, float]] = []
    bounds: list[float | None] = []
    before: list[str] = []
    for s in plan.get("steps") or []:
        now = list(s.get("kept") or [])
        if "pruned" in s:
            what = f"- {s['pruned']}"
        elif "restart" in s:
            what = f"full INT8 again ({s['restart']})"
        elif not now:
            what = "full INT8"
        else:
            added = [g for g in now if g not in before]
            what = "+ " + (", ".join(added) or "?")
        steps.append((what, float(s["drop"])))
        bounds.append(None if s.get("bound") is None else float(s["bound"]))
        before = now
    return PlanRows(
        names=short_names([s["group"] for s in sens], [s.get("op_type", "") for s in sens]),
        kept=[s["group"] in kept for s in sens],
        alone_drop=[float(s["only_quantized"]["drop"]) for s in sens],
        recovered=[float(s.get("gain_in_fp32", 0.0)) for s in sens],
        latency_pct=[100.0 * float(s.get("latency_share", 0.0)) for s in sens],
        steps=steps,
        precision=str(plan.get("kept_precision") or "fp32").upper(),
        confidence=float(plan.get("bound_confidence", 0.9)),
        bounds=bounds,
    )


def short_names(names: Sequence[str], op_types: Sequence[str]) -> list[str]:
    """Group names as a person reads them: '/model/conv1_2/Conv' -> 'conv1_2' (the exporter's scope shared by
    all, and a trailing '/OpType', dropped); a name that would become empty or ambiguous stays whole."""
    prefix = os.path.commonprefix(list(names)) if len(names) > 1 else ""
    prefix = prefix[: prefix.rfind("/") + 1]
    out = []
    for name, op in zip(names, op_types, strict=True):
        short = name[len(prefix):]
        if op and short.endswith(f"/{op}"):
            short = short[: -len(op) - 1]
        out.append(short or name)
    return out if len(set(out)) == len(out) else list(names)


def title_of(plan: dict[str, Any]) -> str:
    full = plan["full_int8"]["drop"]
    final = (plan.get("final") or {}).get("drop")
    kept = plan.get("kept_groups") or []
    precision = str(plan.get("kept_precision") or "fp32").upper()
    after = f" -> {final:.2f}" if final is not None else ""
    bound = (plan.get("final") or {}).get("bound")
    after += f" (up to {bound:.2f})" if bound is not None else ""
    names = ", ".join(kept) or "none"
    if len(names) > TITLE_NAMES_MAX:  # a long plan's names overflow the figure: the panels mark each kept group
        names = "marked in the panels"
    metric = "miou, losses only" if plan["metric"] == "miou" else plan["metric"]
    return (f"INT8 auto plan ({metric}): drop {full:.2f}{after} points, budget {plan['max_drop']:g}, "
            f"on {plan.get('plan_images', '?')} held-out calibration images\n"
            f"{len(kept)} group(s) kept in {precision} ({names}), "
            f"{100 * float(plan.get('kept_latency_share') or 0.0):.1f}% of FP32 time")  # fmt: skip


def draw_plan(plan: dict[str, Any] | None, path: Path) -> Path | None:
    """Write the plan's picture to `path` (PNG, `PlanRows.size_px()` pixels); None when there is no plan (not
    `--auto`) or matplotlib is missing (then one info line says so)."""
    if not plan:
        return None
    try:
        import matplotlib
    except ImportError:
        log.info("%s: not drawn (the plan picture needs matplotlib: pip install 'fcn-deploy[report]')", path)
        return None
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # no "generated new fontManager" in our output
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = plan_rows(plan)
    n = max(len(rows.names), 1)
    fig, (ax_s, ax_c, ax_p) = plt.subplots(
        1, 3, figsize=(WIDTH_IN, height_in(len(rows.names))), dpi=DPI, layout="constrained",
        gridspec_kw={"width_ratios": [3, 1.3, 2.2]})  # fmt: skip
    try:
        _sensitivity(ax_s, rows, n)
        _latency(ax_c, rows, n)
        _steps(ax_p, rows, float(plan["max_drop"]))
        fig.suptitle(title_of(plan), fontsize=10)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)  # no tight bbox: the size is fixed by the group count
    finally:
        plt.close(fig)
    write_bytes(path, buf.getvalue())
    return path


def _band_kept(ax: Any, rows: PlanRows) -> None:
    for i, k in enumerate(rows.kept):
        if k:
            ax.axhspan(i - 0.5, i + 0.5, color=KEPT, alpha=0.18, lw=0, zorder=0)


def _sensitivity(ax: Any, rows: PlanRows, n: int) -> None:
    from matplotlib.patches import Patch

    ys = list(range(len(rows.names)))
    ax.barh([y - 0.2 for y in ys], rows.alone_drop, height=0.4, color=ALONE, label="only it quantized: points lost")
    ax.barh([y + 0.2 for y in ys], rows.recovered, height=0.4, color=ALL_BUT,
            label=f"only it in {rows.precision}: points won back")  # fmt: skip
    _band_kept(ax, rows)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{name}  [{rows.precision}]" if k else name
                        for name, k in zip(rows.names, rows.kept, strict=True)], fontsize=8)  # fmt: skip
    for label, k in zip(ax.get_yticklabels(), rows.kept, strict=True):
        if k:
            label.set_color(KEPT)
            label.set_fontweight("bold")
    ax.set_ylim(n - 0.5, -0.5)  # most sensitive on top
    ax.axvline(0, color="black", lw=0.6)
    values = [*rows.alone_drop, *rows.recovered, 0.0]
    span = max(values) - min(values)
    lo = min(values) - 0.02 * span  # no empty negative half
    ax.set_xlim(lo, max(max(values) + 0.08 * span, lo + 0.5))  # at least half a point wide: noise looks small
    if max(map(abs, values)) <= 1e-6:
        ax.text(0.5, 0.5, "no group changes the metric", transform=ax.transAxes, ha="center", fontsize=9)
    ax.set_xlabel("sensitivity (metric points)")
    ax.grid(True, axis="x", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Patch(color=KEPT, alpha=0.35, label=f"kept in {rows.precision} by the plan"))
    ax.legend(handles=handles, fontsize=7, loc="best")


def _latency(ax: Any, rows: PlanRows, n: int) -> None:
    ys = list(range(len(rows.names)))
    ax.barh(ys, rows.latency_pct, height=0.6, color=[KEPT if k else COST for k in rows.kept])
    _band_kept(ax, rows)
    ax.set_yticks(ys)
    ax.set_yticklabels([])
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel("share of FP32 CPU time (%)")
    ax.grid(True, axis="x", alpha=0.3)


def step_labels(drops: list[float]) -> list[tuple[int, str]]:
    """(step, text) of the value labels: a run of steps that round alike is labelled once, at its last step (the
    plan's own value is always shown); side by side the equal labels overlapped ("0.10 0.10 0.10")."""
    texts = [f"{d:.2f}" for d in drops]
    return [(i, t) for i, t in enumerate(texts) if i == len(texts) - 1 or texts[i + 1] != t]


def _steps(ax: Any, rows: PlanRows, budget: float) -> None:
    xs = list(range(len(rows.steps)))
    drops = [d for _, d in rows.steps]
    ax.plot(xs, drops, "-o", color="black", ms=4, lw=1, label="measured drop")
    up = [(x, d, b) for x, d, b in zip(xs, drops, rows.bounds, strict=False) if b is not None and b > d]
    if up:  # what the budget is judged on: the drop's bootstrap upper bound
        ax.vlines([x for x, _, _ in up], [d for _, d, _ in up], [b for _, _, b in up], color="0.45", lw=2,
                  label=f"{rows.confidence:.0%} upper bound (judged)")  # fmt: skip
        ax.plot([x for x, _, _ in up], [b for _, _, b in up], "_", color="0.45", ms=10, mew=2)
    if xs:
        ax.plot(xs[-1], drops[-1], "*", color=KEPT, ms=14, mec="black", zorder=3, label="the plan")
    for x, text in step_labels(drops):  # the values: a big first drop flattens the rest of the line
        ax.annotate(text, (x, drops[x]), textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.axhline(budget, color=ALONE, ls="--", lw=1, label=f"budget {budget:g}")
    ax.set_xlim(-0.4, max(len(xs) - 1, 0) + 0.6)  # room for the last value's text
    ax.set_xticks(xs)
    ax.set_xticklabels([what for what, _ in rows.steps], rotation=60, ha="right", fontsize=7)
    ax.set_xlabel(f"step (+ kept in {rows.precision}, - back to INT8)", fontsize=8)
    ax.set_ylabel("drop on the plan images (points)")
    ax.set_title("search steps", fontsize=9)
    tops = [*drops, *(b for b in rows.bounds if b is not None), budget]
    ax.set_ylim(bottom=min(0.0, *drops, budget) - 0.05 * max(1e-3, max(tops)))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
