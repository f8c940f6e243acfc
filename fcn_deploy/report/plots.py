"""Report figures: `pareto.png` (median latency vs mean IoU, each point labelled, the Pareto front drawn) and
`per_class.png` (per-class IoU, one bar per precision). matplotlib is imported lazily with the Agg backend."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from fcn_deploy.core.atomic import write_bytes
from fcn_deploy.core.errors import MissingDependencyError

PRECISION_COLOURS = {"fp32": "#1f77b4", "fp16": "#2ca02c", "int8": "#d62728", "bf16": "#9467bd"}
BACKEND_MARKERS = {"torch": "s", "onnxruntime": "o", "tensorrt": "^", "openvino": "v"}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("plots need matplotlib; pip install 'fcn-deploy[report]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    write_bytes(path, buf.getvalue())


def row_label(row: dict) -> str:
    return f"{row['backend']} {row['precision']} {row['size']}"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both lower latency (x) and higher IoU (y), by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def measured(rows: Sequence[dict]) -> list[dict]:
    return [
        r for r in rows
        if r["status"] == "ok" and r.get("latency_ms_median") is not None and r.get("mean_iou") is not None
    ]


def plot_pareto(rows: Sequence[dict], path: Path, title: str = "") -> Path:
    plt = _pyplot()
    pts = measured(rows)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    try:
        xs = [r["latency_ms_median"] for r in pts]
        ys = [100 * r["mean_iou"] for r in pts]
        for k, (r, x, y) in enumerate(zip(pts, xs, ys, strict=True)):
            ax.scatter(
                x, y, s=60, c=PRECISION_COLOURS.get(r["precision"], "gray"),
                marker=BACKEND_MARKERS.get(r["backend"], "D"), edgecolors="black", linewidths=0.5, zorder=3,
            )
            # Staggered offsets keep the labels of near-identical points apart.
            ax.annotate(row_label(r), (x, y), textcoords="offset points", xytext=(6, 4 - 11 * (k % 3)),
                        fontsize=8)
        front = pareto_front(list(zip(xs, ys, strict=True)))
        if len(front) > 1:
            ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="gray", lw=1, zorder=2,
                    label="Pareto front")
            ax.legend(loc="lower right", fontsize=8)
        if not pts:
            ax.text(0.5, 0.5, "no measured rows", ha="center", va="center", transform=ax.transAxes)
        if xs and max(xs) / max(min(xs), 1e-9) > 20:
            ax.set_xscale("log")
        if ys:  # at least +-1 point of IoU around the data: tiny differences must not look like big ones
            pad = max(1.0, 0.15 * (max(ys) - min(ys)))
            ax.set_ylim(max(0.0, min(ys) - pad), min(100.0, max(ys) + pad))
        ax.set_xlabel("median latency per image (ms, batch 1)")
        ax.set_ylabel("mean IoU (%)")
        ax.set_title(title or "accuracy vs latency")
        ax.grid(True, alpha=0.3)
        _save(fig, path)
    finally:
        plt.close(fig)
    return path


def plot_per_class(rows: Sequence[dict], class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """One group of bars per class; one bar per measured row of the first size (precisions side by side)."""
    plt = _pyplot()
    pts = [r for r in measured(rows) if r.get("per_class_iou")]
    if pts:
        first_size = pts[0]["size"]
        pts = [r for r in pts if r["size"] == first_size]
    n = max(len(pts), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(class_names) * max(1, n / 2)), 4.5))
    try:
        width = 0.8 / n
        for j, r in enumerate(pts):
            values = [100 * (r["per_class_iou"].get(c) or 0.0) for c in class_names]
            offsets = [i - 0.4 + width * (j + 0.5) for i in range(len(class_names))]
            ax.bar(offsets, values, width=width, label=row_label(r),
                   color=PRECISION_COLOURS.get(r["precision"], None), alpha=0.55 + 0.45 * (j + 1) / n,
                   edgecolor="black", linewidth=0.3)
        ax.set_xticks(range(len(class_names)))
        ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("IoU (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title or "per-class IoU by precision")
        ax.grid(True, axis="y", alpha=0.3)
        if pts:
            ax.legend(fontsize=7, ncol=min(n, 3), loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
        _save(fig, path)
    finally:
        plt.close(fig)
    return path
