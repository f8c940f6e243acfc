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
AUTO_COLOUR = "#ff7f0e"  # the ring around an --auto plan's point (as the kept groups in calibration.plan_plot)
AUTO_RING_S = 300  # its scatter size (points^2)
AUTO_RING_PX = 12  # its half width in display pixels, kept clear of labels


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("plots need matplotlib; pip install 'fcn-deploy[report]'") from None
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # no "generated new fontManager" in our output
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    write_bytes(path, buf.getvalue())


def is_auto(row: dict) -> bool:
    """A row whose INT8 model is an `--auto` plan (report.scoring.auto_plan_mark)."""
    return row.get("auto_plan_kept_groups") is not None


def row_label(row: dict) -> str:
    return f"{row['backend']} {row['precision']}{' auto' if is_auto(row) else ''} {row['size']}"


def point_label(row: dict) -> str:
    """The Pareto label: the row, and for an auto plan how many groups it kept in FP32."""
    if not is_auto(row):
        return row_label(row)
    return f"{row_label(row)} ({len(row['auto_plan_kept_groups'])} in {row.get('auto_plan_kept_precision', 'fp32').upper()})"


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


BACKEND_NAMES = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime", "tensorrt": "TensorRT", "openvino": "OpenVINO"}
BACKEND_HATCHES = {"torch": "//", "onnxruntime": "", "tensorrt": "xx", "openvino": ".."}
# Label offsets (points) tried in turn until a label overlaps no other label and no marker.
_OFFSETS = [(8, 4), (8, -12), (-8, 4), (-8, -12), (8, 16), (8, -24), (-8, 16), (-8, -24), (8, 28), (8, -36),
            (-8, 28), (-8, -36), (8, 40), (8, -48)]  # fmt: skip


def _place_labels(fig, ax, pts: Sequence[dict], xs: Sequence[float], ys: Sequence[float]) -> list[tuple]:
    """Label every point without overlaps: each label takes the first offset whose box meets no placed label and no
    marker (drawn with a leader line when it had to move away); the rest keep the last offset tried."""
    renderer = fig.canvas.get_renderer()
    taken = [ax.transData.transform((x, y)) for x, y in zip(xs, ys, strict=True)]
    half = [AUTO_RING_PX if is_auto(r) else 6 for r in pts]  # an auto plan's ring is wider than a marker
    marker_boxes = [(px - h, py - h, px + h, py + h) for (px, py), h in zip(taken, half, strict=True)]
    placed: list[tuple[float, float, float, float]] = []

    def hits(b, boxes) -> bool:
        return any(b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3] for o in boxes)

    inside = ax.get_window_extent(renderer)
    for k in sorted(range(len(pts)), key=lambda i: (xs[i], -ys[i])):
        weight = "bold" if is_auto(pts[k]) else "normal"
        for dx, dy in _OFFSETS:
            # measured without its leader line: an arrow's extent would cover the marker it points at
            text = ax.annotate(point_label(pts[k]), (xs[k], ys[k]), textcoords="offset points", xytext=(dx, dy),
                               fontsize=8, ha="left" if dx > 0 else "right", fontweight=weight)  # fmt: skip
            bb = text.get_window_extent(renderer)
            box = (bb.x0, bb.y0, bb.x1, bb.y1)
            fits = inside.x0 <= bb.x0 and bb.x1 <= inside.x1 and inside.y0 <= bb.y0 and bb.y1 <= inside.y1
            text.remove()
            if fits and not hits(box, placed) and not hits(box, marker_boxes):
                break
        ax.annotate(point_label(pts[k]), (xs[k], ys[k]), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                    ha="left" if dx > 0 else "right", fontweight=weight,
                    arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.6} if (dx, dy) not in _OFFSETS[:4] else None)  # fmt: skip
        placed.append(box)
    return placed  # the labels' boxes (display pixels)


def _legend(ax, rows: Sequence[dict], front: bool) -> None:
    """Marker shape = backend, colour = precision (only those on the plot), and the Pareto front."""
    from matplotlib.lines import Line2D

    backends = list(dict.fromkeys(r["backend"] for r in rows))
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    handles = [Line2D([], [], ls="", marker=BACKEND_MARKERS.get(b, "D"), mfc="white", mec="black", ms=7,
                      label=BACKEND_NAMES.get(b, b)) for b in backends]  # fmt: skip
    handles += [Line2D([], [], ls="", marker="o", mfc=PRECISION_COLOURS.get(p, "gray"), mec="black", ms=7,
                       label=p.upper()) for p in precisions]  # fmt: skip
    if any(is_auto(r) for r in rows):
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec=AUTO_COLOUR, mew=2, ms=13,
                              label="INT8 --auto plan"))  # fmt: skip
    if front:
        handles.append(Line2D([], [], ls="--", color="gray", lw=1, label="Pareto front"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              title="marker: backend\ncolour: precision", title_fontsize=8)  # fmt: skip


def plot_pareto(rows: Sequence[dict], path: Path, title: str = "") -> Path:
    plt = _pyplot()
    fig = pareto_figure(rows, title)
    try:
        _save(fig, path)
    finally:
        plt.close(fig)
    return path


def pareto_figure(rows: Sequence[dict], title: str = ""):
    """The figure of pareto.png (the caller closes it): one marker per measured row, an --auto plan's ringed
    (gid "auto-plan"), the front dashed, every label placed clear of the others and of the markers."""
    plt = _pyplot()
    pts = measured(rows)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    try:
        xs = [r["latency_ms_median"] for r in pts]
        ys = [100 * r["mean_iou"] for r in pts]
        for r, x, y in zip(pts, xs, ys, strict=True):
            ax.scatter(
                x, y, s=60, c=PRECISION_COLOURS.get(r["precision"], "gray"),
                marker=BACKEND_MARKERS.get(r["backend"], "D"), edgecolors="black", linewidths=0.5, zorder=3,
            )
        auto = [(x, y) for r, x, y in zip(pts, xs, ys, strict=True) if is_auto(r)]
        if auto:  # a ring round the plan's point: the row to compare with plain INT8
            ax.scatter(*zip(*auto, strict=True), s=AUTO_RING_S, facecolors="none", edgecolors=AUTO_COLOUR,
                       linewidths=2, zorder=4, gid="auto-plan")  # fmt: skip
        front = pareto_front(list(zip(xs, ys, strict=True)))
        if len(front) > 1:
            ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="gray", lw=1, zorder=2)
        if not pts:
            ax.text(0.5, 0.5, "no measured rows", ha="center", va="center", transform=ax.transAxes)
        if xs and max(xs) / max(min(xs), 1e-9) > 20:
            ax.set_xscale("log")
        if xs:  # room for the labels on both sides
            lo, hi = min(xs), max(xs)
            if ax.get_xscale() == "log":
                ax.set_xlim(lo / 1.6, hi * 1.6)
            else:
                span = max(hi - lo, 0.1 * hi, 1e-3)
                ax.set_xlim(max(0.0, lo - 0.35 * span), hi + 0.35 * span)
        if ys:  # at least +-1 point of IoU around the data: tiny differences must not look like big ones
            pad = max(1.0, 0.15 * (max(ys) - min(ys)))
            ax.set_ylim(max(0.0, min(ys) - pad), min(100.0, max(ys) + pad))
        ax.set_xlabel("median latency per image (ms, batch 1)")
        ax.set_ylabel("mean IoU (%)")
        ax.set_title(title or "accuracy vs latency")
        ax.grid(True, alpha=0.3)
        if pts:
            _legend(ax, pts, len(front) > 1)
            fig.canvas.draw()  # final limits and layout before the labels measure themselves
            _place_labels(fig, ax, pts, xs, ys)
    except BaseException:
        plt.close(fig)
        raise
    return fig


BACKEND_SHADES = {"torch": -0.4, "onnxruntime": 0.0, "tensorrt": 0.45, "openvino": 0.25}  # <0 darker, >0 lighter


def bar_colour(row: dict) -> tuple[float, float, float]:
    """per_class.png's colour of a row: its precision's (as in pareto.png), darker or lighter by backend, so that
    two rows of one precision differ in colour and not only in hatching; an --auto plan's in the ring's orange."""
    from matplotlib.colors import to_rgb

    if is_auto(row):
        return to_rgb(AUTO_COLOUR)
    base = to_rgb(PRECISION_COLOURS.get(row["precision"], "gray"))
    k = BACKEND_SHADES.get(row["backend"], 0.0)
    return tuple(c * (1 + k) if k < 0 else c + (1 - c) * k for c in base)  # type: ignore[return-value]


def plot_per_class(rows: Sequence[dict], class_names: Sequence[str], path: Path, title: str = "") -> Path:
    plt = _pyplot()
    fig = per_class_figure(rows, class_names, title)
    try:
        _save(fig, path)
    finally:
        plt.close(fig)
    return path


def per_class_figure(rows: Sequence[dict], class_names: Sequence[str], title: str = ""):
    """One group of bars per class; one bar per measured row of the first size (label = row_label), coloured by
    bar_colour and hatched by backend (PyTorch //, TensorRT xx, OpenVINO ..); a 0% IoU is drawn as a short bar
    outlined in its colour with a 0 above it, never as nothing. The caller closes the figure."""
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
            colour = bar_colour(r)
            values = [100 * (r["per_class_iou"].get(c) or 0.0) for c in class_names]
            offsets = [i - 0.4 + width * (j + 0.5) for i in range(len(class_names))]
            ax.bar(offsets, values, width=width, label=row_label(r), color=colour,
                   hatch=BACKEND_HATCHES.get(r["backend"], ""), edgecolor="black", linewidth=0.3)  # fmt: skip
            for x, v in zip(offsets, values, strict=True):
                if v < 0.5:  # a zero: visible, in the row's colour
                    ax.bar(x, 1.2, width=width, color="white", edgecolor=colour, linewidth=1.5, gid="zero")
                    ax.text(x, 1.8, "0", ha="center", va="bottom", fontsize=7, color="black")
        ax.set_xticks(range(len(class_names)))
        ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("IoU (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title or "per-class IoU by precision")
        ax.grid(True, axis="y", alpha=0.3)
        if pts:
            ax.legend(fontsize=7, ncol=min(n, 3), loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    except BaseException:
        plt.close(fig)
        raise
    return fig


def plot_auto_plans(rows: Sequence[dict], output: Path) -> dict[str, Path]:
    """auto_plan.TARGET.png (calibration.plan_plot) for each --auto INT8 ONNX among the measured rows, its plan
    read from the model card's provenance without loading the weights. {} when there is none or no matplotlib."""
    import json

    from fcn_deploy.calibration.plan_plot import draw_plan
    from fcn_deploy.core.card import METADATA_KEY
    from fcn_deploy.runtime.cpu_auto import read_metadata

    files: dict[str, Path] = {}
    for model in dict.fromkeys(str(r["model"]) for r in measured(rows) if is_auto(r) and r.get("model")):
        if not model.endswith(".onnx"):
            continue  # an engine: its plan is its ONNX's (the tensorrt target's file is not a row's model)
        card = json.loads(read_metadata(model).get(METADATA_KEY) or "{}")
        lowering = (card.get("provenance") or {}).get("lowering") or {}
        key = f"auto_plan_{lowering.get('target', 'onnxruntime')}"
        if key not in files and (path := draw_plan(lowering.get("auto_plan"), output / f"{key}.png")):
            files[key] = path
    return files
