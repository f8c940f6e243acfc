"""Load test of a real tritonserver (nvidia-pytriton's, on this CPU) serving `fcn-deploy package --backend python`:
C concurrent clients (TritonBackend over HTTP, one connection each, batch 1) for D seconds, with dynamic batching on
and then off, each on a fresh server. Reports requests/s, latency percentiles (fcn_deploy.core.timing), failed
requests and the machine (fcn_deploy.core.environment). A narrow untrained FCN-8s is exported unless --model is
given (speed only). Compare only the two rows of one run: the machine is shared and timings are noisy.

    python benchmarks/triton_load.py [--clients 8] [--duration 30] [--size 96x128] [--width 0.125] [--model X.onnx]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from fcn_deploy.core.environment import fingerprint
from fcn_deploy.core.shapes import parse_hw
from fcn_deploy.core.timing import latency_stats
from fcn_deploy.serving.client import TritonBackend
from fcn_deploy.serving.repository import TritonOptions, package_triton
from fcn_deploy.serving.server import TritonServer

CLI = [sys.executable, "-c", "from fcn_deploy.cli import main; main()"]


def load(url: str, clients: int, duration: float, hw: tuple[int, int]) -> dict:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    errors: list[str] = []
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(k: int) -> None:
        backend = TritonBackend(url, timeout=30, retries=0)
        x = np.random.default_rng(k).normal(size=(1, 3, *hw)).astype(np.float32)
        backend.run(x)  # connection and first request outside the measurement
        start.wait()
        while time.perf_counter() < stop_at[0]:
            t = time.perf_counter()
            try:
                backend.run(x)
                latencies[k].append((time.perf_counter() - t) * 1e3)
            except Exception as e:  # counted, never hidden
                failures[k] += 1
                errors.append(str(e)[:200])
        backend.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 1e9
    start.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + duration
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    all_ms = [v for lat in latencies for v in lat]
    stats = latency_stats(all_ms) if all_ms else {}
    return {
        "requests": len(all_ms),
        "failed_requests": sum(failures),
        "errors": sorted(set(errors))[:3],
        "requests_per_s": len(all_ms) / wall,
        "latency_ms": {k: stats[k] for k in ("median", "p90", "p99", "mean", "max")} if stats else {},
        "wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--size", default="96x128")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--instances", type=int, default=1)
    args = ap.parse_args()
    hw = parse_hw(args.size, "--size")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = Path(tmp) / "fcn8s.onnx"
            subprocess.run([*CLI, "export", "--variant", "fcn8s", "--width", str(args.width), "--num-classes", "21",
                            "--input-size", args.size, "-o", str(model)], check=True, capture_output=True)  # fmt: skip
        rows = {}
        for batching in (True, False):
            repo = Path(tmp) / f"repo_{'dyn' if batching else 'nodyn'}"
            package_triton([model], repo, TritonOptions(backend="python", dynamic_batching=batching, max_batch_size=8,
                                                        instances=args.instances, serve_sizes=(hw,), name="fcn",
                                                        with_preprocess=False))  # fmt: skip
            with TritonServer(repo) as server:
                rows["dynamic_batching_on" if batching else "dynamic_batching_off"] = load(
                    f"triton://{server.http_url}/fcn", args.clients, args.duration, hw
                )
    on, off = rows["dynamic_batching_on"], rows["dynamic_batching_off"]
    print(json.dumps({
        "benchmark": "triton_load", "clients": args.clients, "duration_s": args.duration, "size": list(hw),
        "model": str(args.model) if args.model else f"fcn8s width {args.width} (untrained, exported here)",
        "server": "tritonserver from nvidia-pytriton, python backend (fcn-deploy ORT backend), KIND_CPU",
        **rows,
        "throughput_ratio_on_over_off": on["requests_per_s"] / off["requests_per_s"] if off["requests_per_s"] else None,
        "environment": fingerprint(),
        "note": "shared 2-core machine, other jobs running: noisy; compare only the rows of one run",
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
