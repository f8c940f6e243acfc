"""Per-layer times of a TensorRT execution context: an IProfiler that sums what TensorRT reports per run."""

from __future__ import annotations

from typing import Any

from fcn_deploy.engine.trt_compat import import_tensorrt


def layer_profiler() -> Any:
    """A fresh profiler (its class needs TensorRT, imported here); `means()` gives [{'name': layer, 'ms': mean per run}] in the order TensorRT ran them."""
    trt = import_tensorrt()

    class _Profiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.total_ms: dict[str, float] = {}
            self.calls: dict[str, int] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.total_ms[layer_name] = self.total_ms.get(layer_name, 0.0) + float(ms)
            self.calls[layer_name] = self.calls.get(layer_name, 0) + 1

        def means(self) -> list[dict[str, Any]]:
            return [{"name": n, "ms": t / self.calls[n]} for n, t in self.total_ms.items()]

    return _Profiler()
