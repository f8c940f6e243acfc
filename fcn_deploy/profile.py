"""Latency profiling of any backend, reported the way trtexec reports it.

Latency is the wall time of one `Backend.run(batch)` (for TensorRT: H2D + GPU compute + D2H, like trtexec's
"Latency"), summarised by `fcn_deploy.core.timing` (min / max / mean / median / p90 / p95 / p99, nearest-rank
percentiles) with throughput (batches/s and images/s) and the coefficient of variation, warned about above
trtexec's 2.5% (unstable clocks, other load, thermal throttling). What the backend declares is used, nothing is
probed: `device_timing` adds "GPU Time" from `last_device_ms` (CUDA events around the whole enqueue),
`per_layer` allows `--per-layer` through `layer_times(batch, iterations)`. Each result carries the environment
fingerprint (`fcn_deploy.core.environment`) with the GPU from `gpu_info()`. Torch-free: it runs on the deploy side.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.environment import fingerprint
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.memory import check_fits
from fcn_deploy.core.preprocess import preprocess
from fcn_deploy.core.shapes import format_hw
from fcn_deploy.core.timing import latency_stats

CV_WARNING_PCT = 2.5  # trtexec's threshold for "the results may be unstable"
MIN_ITERATIONS = 10  # trtexec's --iterations default: a duration-bound run still takes at least this many
DEVICE_STAGE = "gpu_ms"
STAGE_NAMES = {DEVICE_STAGE: "GPU Time (H2D + compute + D2H)"}


@dataclass(frozen=True)
class ProfileConfig:
    """How long to warm up and measure. `iterations` (exact count) wins over `duration_s` when given."""

    shape: tuple[int, int] | None = None  # None: the model's fixed size, else the card's opt shape
    batch: int = 1
    warmup_s: float = 0.2  # trtexec --warmUp=200 (ms)
    warmup_iterations: int = 1  # at least this many runs before timing, whatever warmup_s says
    iterations: int | None = None
    duration_s: float = 3.0  # trtexec --duration=3
    per_layer: bool = False

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise FcnDeployError(f"--batch {self.batch}: must be at least 1")
        if self.warmup_s < 0 or self.warmup_iterations < 0:
            raise FcnDeployError(f"--warmup-s {self.warmup_s}: must be >= 0")
        if self.iterations is not None and self.iterations < 1:
            raise FcnDeployError(f"--iterations {self.iterations}: must be at least 1")
        if self.iterations is None and not self.duration_s > 0:
            raise FcnDeployError(f"--duration {self.duration_s}: must be > 0 seconds")


def gpu_info() -> dict[str, Any] | None:
    """GPU name, compute capability and CUDA versions when cuda-python and a device exist; else None."""
    if importlib.util.find_spec("cuda") is None:
        return None
    try:
        from fcn_deploy.engine import cuda_rt

        name, cc = cuda_rt.device_info(0)
        return {"name": name, "compute_capability": list(cc), **cuda_rt.versions()}
    except (FcnDeployError, ImportError, OSError):
        return None


def environment() -> dict[str, Any]:
    """The environment fingerprint with this machine's GPU (None without cuda-python or a device)."""
    return fingerprint(gpu=gpu_info())


def _bytes_per_image(backend: Backend, shape: tuple[int, int]) -> int:
    """Memory one image of the batch takes: uint8 pixels, the float32 input and its copy, and about four float32
    maps of the first conv block (64 x width channels) that the runtime holds while it runs."""
    pad = 200 if backend.card.padding == "paper" else 0
    channels = max(1, round(64 * backend.card.width))
    return 3 * shape[0] * shape[1] * (1 + 4 * 2) + 4 * 4 * channels * (shape[0] + pad) * (shape[1] + pad)


def input_batch(backend: Backend, shape: tuple[int, int] | None, batch: int, seed: int = 0) -> np.ndarray:
    """A deterministic, realistically normalised N x 3 x H x W batch (random pixels through the card's
    preprocessing). The size: `shape`, else the model's fixed size, else the card's opt shape."""
    sizes = backend.input_sizes
    fixed = sizes.fixed
    if shape is None:
        shape = fixed or sizes.opt_hw
    elif fixed and tuple(fixed) != tuple(shape):
        raise FcnDeployError(
            f"--shape {format_hw(shape)}: this model has a static input of {format_hw(fixed)}; "
            f"pass --shape {format_hw(fixed)} or re-export it with dynamic axes"
        )
    elif shape[0] > sizes.max_hw[0] or shape[1] > sizes.max_hw[1]:  # smaller sizes run (FCN takes any HxW)
        raise FcnDeployError(
            f"--shape {format_hw(shape)} is outside this model's range {format_hw(sizes.min_hw)} .. "
            f"{format_hw(sizes.max_hw)} (its model card or engine profile); profile a size inside it, or re-export "
            "/ rebuild with a --max-shape that holds it"
        )
    check_fits(batch * _bytes_per_image(backend, shape), f"--shape {format_hw(shape)} x batch {batch}",
               "profile a smaller --shape or --batch")  # fmt: skip
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (shape[0], shape[1], 3), dtype=np.uint8)
    one = preprocess(pixels, backend.card.normalization)
    return np.ascontiguousarray(np.repeat(one, batch, axis=0))


@dataclass
class ProfileResult:
    backend: dict[str, Any]
    shape: tuple[int, int]
    batch: int
    warmup: dict[str, float]
    latency_ms: dict[str, float]
    iterations: int
    total_s: float
    stages_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    layers: list[dict[str, Any]] | None = None
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def throughput_qps(self) -> float:
        return self.iterations / self.total_s if self.total_s > 0 else 0.0

    @property
    def stability_cv_pct(self) -> float:
        """trtexec judges stability on GPU time; without a GPU, on the latency."""
        if DEVICE_STAGE in self.stages_ms:
            return self.stages_ms[DEVICE_STAGE]["cv_pct"]
        return self.latency_ms["cv_pct"]

    @property
    def unstable(self) -> bool:
        return self.stability_cv_pct > CV_WARNING_PCT

    def warnings(self) -> list[str]:
        out = []
        if self.unstable:
            cv = self.stability_cv_pct
            out.append(
                f"coefficient of variation {cv:.1f}% is above {CV_WARNING_PCT}%: the timings may be unstable "
                "(other load on the machine, frequency scaling, thermal throttling); lock clocks or rerun"
            )
        if self.iterations < MIN_ITERATIONS:
            out.append(f"only {self.iterations} timed iterations: percentiles are coarse")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "fcn-deploy-profile/1",
            "backend": self.backend,
            "shape": format_hw(self.shape),
            "batch": self.batch,
            "warmup": self.warmup,
            "iterations": self.iterations,
            "total_s": round(self.total_s, 6),
            "latency_ms": {k: round(v, 6) for k, v in self.latency_ms.items()},
            "throughput_qps": round(self.throughput_qps, 4),
            "throughput_images_per_s": round(self.throughput_qps * self.batch, 4),
            "stages_ms": {s: {k: round(v, 6) for k, v in d.items()} for s, d in self.stages_ms.items()},
            "layers": self.layers,
            "unstable": self.unstable,
            "warnings": self.warnings(),
            "environment": self.environment,
        }

    def summary(self) -> str:
        """Text in trtexec's layout."""
        lat = self.latency_ms
        lines = [
            f"=== Performance summary ({self.backend.get('backend')}, batch {self.batch}, {format_hw(self.shape)}) ===",
            f"Throughput: {self.throughput_qps:.3f} qps ({self.throughput_qps * self.batch:.3f} images/s)",
            _stat_line("Latency", lat),
        ]
        lines += [_stat_line(STAGE_NAMES[k], v) for k, v in self.stages_ms.items()]
        lines.append(
            f"Total Host Walltime: {self.total_s:.3f} s for {self.iterations} iterations "
            f"(after {self.warmup['iterations']} warm-up runs in {self.warmup['seconds']:.3f} s)"
        )
        lines.append(f"Coefficient of variance: {self.stability_cv_pct:.2f} %")
        if self.layers:
            lines.append("Per-layer time (ms, mean per run):")
            lines += [f"  {row['ms']:10.4f}  {row['name']}" for row in self.layers]
        lines += [f"[W] {w}" for w in self.warnings()]
        return "\n".join(lines)


def _stat_line(name: str, s: dict[str, float]) -> str:
    return (
        f"{name}: min = {s['min']:.5g} ms, max = {s['max']:.5g} ms, mean = {s['mean']:.5g} ms, "
        f"median = {s['median']:.5g} ms, percentile(90%) = {s['p90']:.5g} ms, "
        f"percentile(95%) = {s['p95']:.5g} ms, percentile(99%) = {s['p99']:.5g} ms"
    )


def profile_backend(
    backend: Backend,
    config: ProfileConfig = ProfileConfig(),  # noqa: B008 - frozen, so a shared default is safe
    batch: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> ProfileResult:
    """Warm up, then time `backend.run` back to back. `batch` overrides the generated random input."""
    if batch is None:
        batch = input_batch(backend, config.shape, config.batch)
    shape = (int(batch.shape[2]), int(batch.shape[3]))
    if config.per_layer and not backend.per_layer:
        raise FcnDeployError(
            f"--per-layer: the {backend.name} backend does not report per-layer times; "
            "per-layer timing needs a TensorRT engine (run it on --backend tensorrt)"
        )

    t0 = time.perf_counter()
    warm = 0
    while warm < config.warmup_iterations or time.perf_counter() - t0 < config.warmup_s:
        backend.run(batch)
        warm += 1
    warm_s = time.perf_counter() - t0

    latencies: list[float] = []
    device: list[float] = []
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        backend.run(batch)
        latencies.append((time.perf_counter() - t) * 1e3)
        if backend.device_timing and backend.last_device_ms is not None:
            device.append(float(backend.last_device_ms))
        if progress is not None:
            progress(len(latencies))
        if config.iterations is not None:
            if len(latencies) >= config.iterations:
                break
        elif time.perf_counter() - start >= config.duration_s and len(latencies) >= MIN_ITERATIONS:
            break
    total_s = time.perf_counter() - start

    layers = list(backend.layer_times(batch, max(len(latencies), MIN_ITERATIONS))) if config.per_layer else None
    return ProfileResult(
        backend=backend.describe(),
        shape=shape,
        batch=int(batch.shape[0]),
        warmup={"iterations": warm, "seconds": round(warm_s, 6)},
        latency_ms=latency_stats(latencies),
        iterations=len(latencies),
        total_s=total_s,
        stages_ms={DEVICE_STAGE: latency_stats(device)} if device else {},
        layers=layers,
        environment=environment(),
    )


__all__ = ["ProfileConfig", "ProfileResult", "environment", "gpu_info", "input_batch", "profile_backend"]
