"""`OnnxFromCheckpoint`: checkpoint -> FP32 ONNX with its model card (fcn_deploy.export), reused when the card
already names this checkpoint (`checkpoint_sha256`) and these export options (`provenance.export_options`).
Without a checkpoint it exports an untrained model (`architecture`: variant, num_classes, width, padding), which
has no parent to match and is always exported."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fcn_deploy.chain.artifact import Artifact, Progress, plain, replacing, to_stderr
from fcn_deploy.core.atomic import sha256_file
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.onnx_io import load_onnx
from fcn_deploy.export.options import ExportOptions

OPTIONS_KEY = "export_options"  # where the card's provenance records the options the graph was exported with


class OnnxFromCheckpoint:
    def __init__(self, checkpoint: Path | None, output: Path, options: ExportOptions | None = None, *,
                 architecture: dict | None = None, reuse: bool = True, say: Progress = to_stderr) -> None:  # fmt: skip
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.output = Path(output)
        self.architecture = dict(architecture or {})
        self.options = options or ExportOptions()
        self.reuse, self.say = reuse, say
        self._made: Artifact | None = None

    def record(self) -> dict:
        return plain(dataclasses.asdict(self.options))

    def reusable(self) -> bool:
        if self.checkpoint is None or not self.output.is_file():
            return False
        try:
            card = ModelCard.from_onnx(load_onnx(self.output), str(self.output))
        except FcnDeployError:
            return False
        return (card.checkpoint_sha256 == sha256_file(self.checkpoint)
                and card.provenance.get(OPTIONS_KEY) == self.record())  # fmt: skip

    def __call__(self, scratch: Path | None = None) -> Artifact:
        if self._made is not None:
            return self._made
        if self.reuse and self.reusable():
            self.say(f"  reusing {self.output} (exported from this checkpoint with these options)")
            self._made = Artifact(self.output, reused=True)
            return self._made
        from fcn_deploy.export.onnx_export import export_onnx, model_for_export

        if self.output.is_file():
            why = "an earlier export" if not self.reuse else "not exported from this checkpoint with these options"
            self.say(replacing(self.output, why))
        self.say(f"  exporting {self.checkpoint or 'an untrained model'} -> {self.output}")
        model, card, _ = model_for_export(self.checkpoint, **self.architecture)
        card = card.replace(provenance={**card.provenance, OPTIONS_KEY: self.record()})
        self._made = Artifact(self.output, reused=False, result=export_onnx(model, card, self.output, self.options))
        return self._made
