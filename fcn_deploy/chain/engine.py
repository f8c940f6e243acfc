"""`EngineFromOnnx`: ONNX (a file or a step) -> TensorRT plan + `.engine.json` manifest, reused when the manifest
names the same source ONNX (sha256), the same options and this TensorRT + GPU.

The one seam where the chain reaches TensorRT is the step's `builder` (default TENSORRT: its availability check
and fcn_deploy.engine.build.engine_from_onnx). Every command that makes an engine (build-engine, report, demo)
goes through this step, so the builder is called with one set of keyword arguments from one place.
"""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fcn_deploy.chain.artifact import Artifact, Parent, Progress, plain, resolve, to_stderr
from fcn_deploy.chain.lowered import LoweredOnnx
from fcn_deploy.core.atomic import scratch_dir, sha256_file
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.onnx_io import load_onnx
from fcn_deploy.core.shapes import format_hw
from fcn_deploy.engine.build import BuildOptions, BuildResult, detect_precision, engine_from_onnx
from fcn_deploy.engine.manifest import manifest_path, read_manifest

CHAIN_KEY = "chain"  # where the manifest's provenance records the options the engine was built with


@dataclass(frozen=True)
class Unavailable:
    reason: str  # short, for a skipped report row
    detail: str  # the whole message with the fix (build-engine's exit-3 line)


class EngineBuilder(Protocol):
    def unavailable(self) -> Unavailable | None:
        """Why no engine can be built here (no TensorRT, cuda-python or GPU), or None."""

    def platform(self) -> tuple[str, tuple[int, int]]:
        """(TensorRT version, compute capability) an engine built now is for."""

    def build(self, onnx_path: Path, output: Path, options: BuildOptions, *, card: ModelCard, precision: str,
              provenance: dict[str, Any], source_onnx: Path, rebuild_command: str) -> BuildResult:  # fmt: skip
        """Build and write the plan, then its manifest (engine_from_onnx's signature)."""


class TensorRTBuilder:
    """TensorRT on this machine's first GPU."""

    build = staticmethod(engine_from_onnx)

    def unavailable(self) -> Unavailable | None:
        from fcn_deploy.engine import cuda_rt, trt_compat

        try:
            trt_compat.import_tensorrt()
        except MissingDependencyError as e:
            short = "TensorRT not installed" if not trt_compat.tensorrt_available() else "TensorRT cannot be loaded"
            return Unavailable(short, str(e))
        try:
            cuda_rt.device_info(0)
        except MissingDependencyError as e:
            return Unavailable("no CUDA GPU visible (or cuda-python missing)", str(e))
        return None

    def platform(self) -> tuple[str, tuple[int, int]]:
        from fcn_deploy.engine import cuda_rt, trt_compat

        return trt_compat.import_tensorrt().__version__, cuda_rt.device_info(0)[1]


TENSORRT = TensorRTBuilder()


def rebuild_command(source: Path, output: Path, options: BuildOptions, lowering: LoweredOnnx | None) -> str:
    """The build-engine command line that makes this engine again (printed by a stale-engine error)."""
    p = options.profile
    args = ["fcn-deploy", "build-engine", str(source)]
    if lowering is not None:
        args.append(f"--{lowering.precision}")
    args += ["--min-shape", format_hw(p.min_hw), "--opt-shape", format_hw(p.opt_hw), "--max-shape",
             format_hw(p.max_hw), "--batch", ":".join(str(b) for b in p.batch)]  # fmt: skip
    for flag, value in (("workspace", options.workspace_bytes), ("timing-cache", options.timing_cache),
                        ("dla-core", options.dla_core),
                        ("builder-optimization-level", options.builder_optimization_level)):  # fmt: skip
        if value is not None:
            args.append(f"--{flag}={value}")
    if options.version_compatible:
        args.append("--version-compatible")
    for key, value in (lowering.given() if lowering is not None else {}).items():
        key = {"cache": "calib_cache"}.get(key, key)  # build-engine's name for quantize's --cache
        if key == "calib_shapes":
            value = ",".join(format_hw(s) for s in value)
        if value is True:  # a flag (--auto)
            args.append(f"--{key.replace('_', '-')}")
            continue
        for item in value if isinstance(value, (tuple, list)) else (value,):
            args.append(f"--{key.replace('_', '-')}={item}")
    return shlex.join([*args, "--output", str(output)])


class EngineFromOnnx:
    def __init__(self, onnx: Parent, output: Path, options: BuildOptions, *, builder: EngineBuilder | None = None,
                 reuse: bool = True, say: Progress = to_stderr) -> None:  # fmt: skip
        self.onnx, self.output, self.options = onnx, Path(output), options
        self.builder = builder or TENSORRT
        self.reuse, self.say = reuse, say
        self._made: Artifact | None = None

    @property
    def transient(self) -> LoweredOnnx | None:
        """The lowering whose ONNX lives only for this build (the manifest then names the lowering's parent)."""
        return self.onnx if isinstance(self.onnx, LoweredOnnx) and self.onnx.output is None else None

    def record(self) -> dict[str, Any]:
        lowering = self.transient
        return plain({"build_options": self.options.to_dict(), "profile": self.options.profile.to_dict(),
                      "lowering": lowering.record() if lowering else None})  # fmt: skip

    def mismatch(self, source: Path) -> str | None:
        try:
            m = read_manifest(self.output)
        except FcnDeployError as e:
            return str(e)
        if m.onnx_sha256 != sha256_file(source):
            return "built from another ONNX"
        if m.provenance.get(CHAIN_KEY) != self.record():
            return "built with other options"
        version, cc = self.builder.platform()
        if (m.tensorrt_version, tuple(m.compute_capability)) != (version, tuple(cc)):
            return "built for another TensorRT or GPU"
        if not self.output.is_file() or sha256_file(self.output) != m.engine_sha256:
            return "plan does not match its manifest"
        return None

    def __call__(self, scratch: Path | None = None) -> Artifact:
        if self._made is not None:
            return self._made
        missing = self.builder.unavailable()
        kept = isinstance(self.onnx, LoweredOnnx) and self.onnx.output is not None
        if missing is not None and not kept:  # nothing worth making first: stop before minutes of calibration
            raise MissingDependencyError(f"{missing.detail}; no engine written")
        with scratch_dir("engine") as tmp:  # fcn-engine.PID.*: a killed run's is swept by the next
            lowering = self.transient
            source = resolve(lowering.parent if lowering else self.onnx, Path(tmp))
            if missing is None and self.reuse and self.output.is_file() and self.mismatch(source) is None:
                self.say(f"  reusing {self.output} (built from this ONNX with these options)")
                self._made = Artifact(self.output, reused=True)
                return self._made
            onnx_path = resolve(self.onnx, Path(tmp)) if lowering else source
            if missing is not None:
                raise MissingDependencyError(f"{missing.detail}; no engine written (the ONNX is at {onnx_path})")
            self._made = Artifact(self.output, reused=False, result=self._build(onnx_path, source, lowering))
        return self._made

    def _build(self, onnx_path: Path, source: Path, lowering: LoweredOnnx | None) -> BuildResult:
        if self.output.resolve() in (onnx_path.resolve(), source.resolve()):
            raise FcnDeployError(f"{self.output}: the engine would overwrite its own ONNX; choose another --output")
        model = load_onnx(onnx_path)
        card = ModelCard.from_onnx(model, str(onnx_path))
        precision = card.precision if card.precision != "fp32" else detect_precision(model)
        provenance = {**card.provenance, CHAIN_KEY: self.record()}
        if onnx_path != source:
            provenance["lowered_onnx_sha256"] = sha256_file(onnx_path)
        self.say(f"  building TensorRT {precision} engine {self.output} ({self.options.profile.describe()})")
        try:
            return self.builder.build(
                onnx_path, self.output, self.options, card=card, precision=precision, provenance=provenance,
                source_onnx=source, rebuild_command=rebuild_command(source, self.output, self.options, lowering),
            )
        except BaseException:
            self._discard_partial()
            raise

    def _discard_partial(self) -> None:
        """A build stopped between the plan and its manifest leaves no plan that its manifest does not describe."""
        try:
            intact = sha256_file(self.output) == read_manifest(self.output).engine_sha256
        except (OSError, FcnDeployError):
            intact = False
        if not intact:
            for path in (self.output, manifest_path(self.output)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
