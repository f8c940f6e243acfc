"""`build_report(ReportConfig)`: build what is missing, evaluate every backend x precision x size on the same
images, and write report.md/json/csv, pareto.png, per_class.png and samples/.

The steps live beside this one: report.inputs (what is asked and its checks), report.models (the artifacts, made
through fcn_deploy.chain), report.scoring (the rows). Every row is scored on the same images with the one
scoring convention: the network sees each image resized to the row's size and its label map is brought back to
the label's resolution; agreement is the fraction of pixels whose label equals the FP32 reference's at the network
size. Latency is timed on the first image, every row of a size in interleaved rounds (report.latency).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcn_deploy.chain.artifact import to_stderr
from fcn_deploy.chain.engine import EngineBuilder
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.shapes import format_hw
from fcn_deploy.profile import environment
from fcn_deploy.report.inputs import Inputs, ReportConfig, check_inputs
from fcn_deploy.report.latency import method as latency_method
from fcn_deploy.report.models import build_models
from fcn_deploy.report.scoring import Scored, score_rows
from fcn_deploy.report.write import sort_rows, write_report


@dataclass
class ReportResult:
    output: Path
    rows: list[dict]
    files: dict[str, Path]
    meta: dict[str, Any]


def build_report(cfg: ReportConfig, echo: Callable[[str], None] | None = None,
                 builder: EngineBuilder | None = None) -> ReportResult:  # fmt: skip
    """`builder`: the chain's engine builder (default: TensorRT on this machine)."""
    from fcn_deploy.chain.engine import TENSORRT

    say = echo or to_stderr
    builder = builder or TENSORRT
    started = time.perf_counter()
    inp = check_inputs(cfg, builder)
    output = Path(cfg.output)
    models = output / "models"
    models.mkdir(parents=True, exist_ok=True)
    say(f"report: {inp.source} on {cfg.dataset}:{cfg.split} ({inp.count} images), sizes "
        f"{', '.join(format_hw(s) for s in inp.sizes)}, backends {', '.join(inp.backends)}, "
        f"precisions {', '.join(inp.precisions)}")  # fmt: skip

    say("[1/3] models")
    fp32, plans = build_models(cfg, inp, models, builder, say)
    others = sum(1 for p in plans if p.model and (p.backend, p.precision) != ("onnxruntime", "fp32"))
    say(f"[2/3] evaluating the ONNX Runtime FP32 reference and {others} more backend/precision pair(s) x "
        f"{len(inp.sizes)} size(s)")
    scored = score_rows(cfg, inp, plans, fp32, say)

    say("[3/3] writing the report")
    files = write_outputs(output, scored, inp, cfg)
    meta = report_meta(cfg, inp, fp32, started)
    meta["files"] = [str(p.relative_to(output)) for p in files.values()]
    files.update(write_report(output, scored.rows, meta))
    return ReportResult(output, sort_rows(scored.rows), files, meta)


def report_meta(cfg: ReportConfig, inp: Inputs, fp32: Path, started: float) -> dict[str, Any]:
    card: ModelCard = inp.card
    return {
        "model": str(inp.source),
        "fp32_onnx": str(fp32),
        "card": {"variant": card.variant, "width": card.width, "num_classes": card.num_classes},
        "dataset": cfg.dataset,
        "dataset_options": inp.dataset_options,
        "data_root": cfg.data_root,
        "split": cfg.split,
        "num_images": inp.count,
        "sizes": [format_hw(s) for s in inp.sizes],
        "backends": list(inp.backends),
        "precisions": list(inp.precisions),
        "reference": f"ONNX Runtime FP32 ({fp32.name})",
        "class_names": list(card.class_names),
        "latency_method": latency_method(cfg),
        "environment": environment(),
        "seconds": round(time.perf_counter() - started, 2),
    }


def write_outputs(output: Path, scored: Scored, inp: Inputs, cfg: ReportConfig) -> dict[str, Path]:
    from fcn_deploy.report.plots import plot_auto_plans, plot_pareto, plot_per_class
    from fcn_deploy.report.samples import pick_images, write_sample

    card = inp.card
    files = {
        "pareto": plot_pareto(scored.rows, output / "pareto.png", f"{card.variant} on {cfg.dataset}:{cfg.split}"),
        "per_class": plot_per_class(scored.rows, card.class_names, output / "per_class.png",
                                    f"per-class IoU, {cfg.dataset}:{cfg.split}"),
    }  # fmt: skip
    files.update(plot_auto_plans(scored.rows, output))  # the --auto plans' sensitivity pictures
    for n, (i, why) in enumerate(pick_images(scored.sample_order, cfg.num_samples)):
        image, labels = inp.dataset[i]
        name = f"{n:02d}_image{i}_{why.replace(' ', '_')}.png"
        files[f"sample{n}"] = write_sample(
            output / "samples" / name, image, labels, [(k, v[i]) for k, v in scored.sample_predictions.items()],
            card.palette, card.class_names, ignore_index=card.ignore_index,
        )
    return files
