"""Latency profiling of any backend, reported the way trtexec reports it.

Latency is the wall time of one `Backend.run(batch)` (for TensorRT: H2D + GPU compute + D2H, like trtexec's
"Latency"). Statistics: min / max / mean / median / p90 / p95 / p99, throughput (batches/s and images/s) and the
coefficient of variation, with trtexec's warning above 2.5% (unstable clocks, other load, thermal throttling).

A backend that can time its own stages exposes `timed_run(batch) -> (outputs, {"h2d_ms", "compute_ms",
"d2h_ms", "enqueue_ms"})` (CUDA events; the TensorRT backend); profile then reports each stage like trtexec's "H2D Latency",
"GPU Compute Time", "D2H Latency" and "Enqueue Time"; a backend that only records `last_gpu_ms` after each run
(CUDA events around the whole enqueue, as the TensorRT backend does) gets "GPU Time". Per-layer times come from `layer_times(batch, iterations)
-> [{"name", "ms"}]` when asked for and offered. Torch-free: it runs on the deploy side.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.preprocess import preprocess
from fcn_deploy.core.shapes import format_hw

CV_WARNING_PCT = 2.5  # trtexec's threshold for "the results may be unstable"
MIN_ITERATIONS = 10  # trtexec's --iterations default: a duration-bound run still takes at least this many
STAGE_KEYS = ("h2d_ms", "compute_ms", "d2h_ms", "enqueue_ms", "gpu_ms")
STAGE_NAMES = {"enqueue_ms": "Enqueue Time", "h2d_ms": "H2D Latency", "compute_ms": "GPU Compute Time",
               "d2h_ms": "D2H Latency", "gpu_ms": "GPU Time (H2D + compute + D2H)"}
LIBRARIES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "tensorrt", "cuda-python", "opencv-python-headless")


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


def percentile(sorted_ms: Sequence[float], pct: float) -> float:
    """trtexec's percentile: the value below which `pct` percent of the (sorted) samples fall, nearest rank."""
    n = len(sorted_ms)
    exclude = int((100.0 - pct) * n / 100.0 + 1e-9)  # (1 - 0.9) * 100 is 9.99... in binary floating point
    return float(sorted_ms[max(n - 1 - exclude, 0)])


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """min / max / mean / median / p90 / p95 / p99 / std and the coefficient of variation in percent."""
    if not samples_ms:
        raise ValueError("latency_stats of no samples")
    a = np.sort(np.asarray(samples_ms, np.float64))
    mean = float(a.mean())
    std = float(a.std())
    return {
        "min": float(a[0]),
        "max": float(a[-1]),
        "mean": mean,
        "median": float(np.median(a)),
        "p90": percentile(a, 90),
        "p95": percentile(a, 95),
        "p99": percentile(a, 99),
        "std": std,
        "cv_pct": 100.0 * std / mean if mean > 0 else 0.0,
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    """Installed distributions from package metadata: nothing is imported to find them."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


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


def tensorrt_version() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        return importlib.metadata.version("tensorrt")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def environment() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env_threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    torch = sys.modules.get("torch")  # only when already loaded: profiling must not pull torch in
    if torch is not None:
        env_threads["torch_intra_op"] = str(torch.get_num_threads())
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_threads_available": affinity,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "thread_env": env_threads,
        "libraries": library_versions(),
        "gpu": gpu_info(),
        "tensorrt": tensorrt_version(),
    }


def input_batch(backend: Backend, shape: tuple[int, int] | None, batch: int, seed: int = 0) -> np.ndarray:
    """A deterministic, realistically normalised N x 3 x H x W batch (random pixels through the card's
    preprocessing). The size: `shape`, else the model's fixed size, else the card's opt shape."""
    fixed = getattr(backend, "fixed_hw", None)
    if shape is None:
        shape = tuple(fixed) if fixed else tuple(backend.card.opt_shape)
    elif fixed and tuple(fixed) != tuple(shape):
        raise FcnDeployError(
            f"--shape {format_hw(shape)}: this model has a static input of {format_hw(fixed)}; "
            f"pass --shape {format_hw(fixed)} or re-export it with dynamic axes"
        )
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
        """trtexec judges stability on GPU compute time; without a GPU, on the latency."""
        for key in ("compute_ms", "gpu_ms"):
            if key in self.stages_ms:
                return self.stages_ms[key]["cv_pct"]
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
        lines += [_stat_line(STAGE_NAMES[k], self.stages_ms[k]) for k in STAGE_KEYS if k in self.stages_ms]
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
    timed = getattr(backend, "timed_run", None)
    run = timed if callable(timed) else backend.run

    t0 = time.perf_counter()
    warm = 0
    while warm < config.warmup_iterations or time.perf_counter() - t0 < config.warmup_s:
        run(batch)
        warm += 1
    warm_s = time.perf_counter() - t0

    latencies: list[float] = []
    stages: dict[str, list[float]] = {}
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        out = run(batch)
        latencies.append((time.perf_counter() - t) * 1e3)
        if callable(timed):
            for key, ms in out[1].items():
                if key in STAGE_KEYS:
                    stages.setdefault(key, []).append(float(ms))
        elif getattr(backend, "last_gpu_ms", None) is not None:
            stages.setdefault("gpu_ms", []).append(float(backend.last_gpu_ms))
        if progress is not None:
            progress(len(latencies))
        if config.iterations is not None:
            if len(latencies) >= config.iterations:
                break
        elif time.perf_counter() - start >= config.duration_s and len(latencies) >= MIN_ITERATIONS:
            break
    total_s = time.perf_counter() - start

    layers = None
    if config.per_layer:
        layer_times = getattr(backend, "layer_times", None)
        if not callable(layer_times):
            raise FcnDeployError(
                f"--per-layer: the {backend.name} backend does not report per-layer times; "
                "per-layer timing needs a TensorRT engine (run it on --backend tensorrt)"
            )
        layers = list(layer_times(batch, max(len(latencies), MIN_ITERATIONS)))
    return ProfileResult(
        backend=backend.describe(),
        shape=shape,
        batch=int(batch.shape[0]),
        warmup={"iterations": warm, "seconds": round(warm_s, 6)},
        latency_ms=latency_stats(latencies),
        iterations=len(latencies),
        total_s=total_s,
        stages_ms={k: latency_stats(v) for k, v in stages.items()},
        layers=layers,
        environment=environment(),
    )


__all__ = [
    "ProfileConfig",
    "ProfileResult",
    "environment",
    "input_batch",
    "latency_stats",
    "percentile",
    "profile_backend",
]
