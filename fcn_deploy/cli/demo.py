"""`fcn-deploy demo`: the whole pipeline on synthetic data on this machine's CPU, ending with the report table."""

from __future__ import annotations

import click

from fcn_deploy.demo import DemoConfig

DEFAULTS = DemoConfig()


@click.command("demo")
@click.option("--output", type=click.Path(), default=str(DEFAULTS.output), show_default=True,
              help="Directory for the checkpoint, models and report.")
@click.option("--epochs", type=int, default=DEFAULTS.epochs, show_default=True,
              help="Training epochs (fewer: faster, worse).")
@click.option("--train-minutes", type=float, default=DEFAULTS.train_minutes, show_default=True,
              help="Stop training after the epoch that crosses this budget.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="PyTorch CPU threads [default: measured, 1 vs every usable core, on a few training steps].")
@click.option("--max-drop", type=click.FloatRange(min=0), default=DEFAULTS.max_drop, show_default=True,
              help="INT8 budget in mean IoU points: the `quantize --auto` plan's, and the most the `next:` model "
                   "may lose.")
@click.option("--fresh", is_flag=True,
              help="Retrain even when --output holds a finished demo with the same options (else its training "
                   "and every still-valid model are reused).")
def command(output, epochs, train_minutes, threads, max_drop, fresh) -> None:
    """Synthetic shapes -> train a narrow FCN-8s on the CPU -> ONNX -> FP16 + INT8 -> accuracy/latency report."""
    from pathlib import Path

    from fcn_deploy.demo import closing_text, run_demo

    result = run_demo(DemoConfig(output=Path(output), epochs=epochs, train_minutes=train_minutes, threads=threads,
                                   max_drop=max_drop, fresh=fresh))
    click.echo(closing_text(result, max_drop))
