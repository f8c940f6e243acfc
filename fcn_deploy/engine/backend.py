"""The TensorRT backend: a checked, deserialized plan run through cuda-python buffers and streams. Torch-free.

Load order (reliability.md part c): manifest exists -> sha256, TensorRT version and compute capability match
-> deserialize with a capturing logger -> non-null engine, else the logged reason. `engine_host_code_allowed`
is set only after the manifest check passed and only when the manifest says the plan was built
version-compatible (such a plan embeds the lean runtime: host code); `IRuntime.DLA_core` is set from the manifest
before deserializing (otherwise a DLA engine runs on core 0). CUDA's current device is per thread: every thread
that runs the engine (the pipeline infers on its own thread) selects the backend's device first.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.shapes import ShapeRange
from fcn_deploy.engine import cuda_rt
from fcn_deploy.engine.manifest import check_engine, read_manifest
from fcn_deploy.engine.profile_shapes import Profile

# TensorRT DataType names -> numpy; by name so no per-version enum lookups are needed.
NP_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT32": np.int32,
    "INT64": np.int64,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}
LABEL_DTYPES = (np.int32, np.int64, np.uint8, np.int8)


class EngineLoadError(FcnDeployError):
    """TensorRT refused the plan; the message carries what its logger said."""


class _Binding:
    def __init__(self, name: str, dtype: np.dtype, is_input: bool) -> None:
        self.name, self.dtype, self.is_input = name, np.dtype(dtype), is_input
        self.shape: tuple[int, ...] = ()
        self.device: cuda_rt.DeviceBuffer | None = None
        self.host: cuda_rt.PinnedBuffer | None = None

    def allocate(self, shape: tuple[int, ...]) -> None:
        self.free()
        self.shape = tuple(int(d) for d in shape)
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.device, self.host = cuda_rt.DeviceBuffer(nbytes), cuda_rt.PinnedBuffer(nbytes)

    @property
    def nbytes(self) -> int:
        return self.host.nbytes if self.host else 0

    def view(self) -> np.ndarray:
        return self.host.view(self.dtype, self.shape)

    def free(self) -> None:
        for buf in (self.device, self.host):
            if buf is not None:
                buf.free()
        self.device = self.host = None


class TrtBackend(Backend):
    """Sizes from the engine's profile; device time of every run (CUDA events); per-layer times (IProfiler)."""

    name = "tensorrt"
    device_timing = True
    per_layer = True

    def __init__(
        self,
        engine_path: str | Path,
        *,
        trust: bool = False,
        onnx_path: str | Path | None = None,
        card: ModelCard | None = None,
        device: int = 0,
        cuda_graph: bool = False,
    ) -> None:
        from fcn_deploy.engine.logger import capturing_logger
        from fcn_deploy.engine.trt_compat import import_tensorrt

        trt = import_tensorrt()
        self.device = int(device)
        self._device_threads: set[int] = set()
        self._use_device()
        self.gpu_name, cc = cuda_rt.device_info(device)
        self.path = Path(engine_path)
        self.manifest = check_engine(
            self.path,
            tensorrt_version=trt.__version__,
            compute_capability=cc,
            onnx_path=onnx_path,
            trust=trust,
        )
        checked = self.manifest  # None with --trust: then no host code is ever allowed
        if self.manifest is None and self.path.with_name(self.path.name + ".json").is_file():
            self.manifest = read_manifest(self.path)  # --trust: skip the checks, still use the recorded card
        if card is None and self.manifest is not None:
            card = ModelCard.from_dict(self.manifest.model_card, str(self.path) + ".json")
        if card is None:
            raise FcnDeployError(
                f"{self.path}: a trusted engine without a manifest has no model card; pass the ONNX it was built from"
            )
        self.card = card
        self.trt_version = trt.__version__
        self._logger = capturing_logger()
        self._runtime = trt.Runtime(self._logger)
        if checked is not None and checked.build_options.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True  # checksum and provenance verified above
        m = self.manifest
        if m is not None and m.dla_core is not None:
            self._runtime.DLA_core = int(m.dla_core)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise EngineLoadError(
                f"{self.path}: TensorRT {trt.__version__} refused the engine: {self._logger.store.reason()}; "
                "rebuild it with `fcn-deploy build-engine` on this machine"
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineLoadError(
                f"{self.path}: could not create an execution context: {self._logger.store.reason()}"
            )
        self._inputs: list[_Binding] = []
        self._outputs: list[_Binding] = []
        for i in range(self._engine.num_io_tensors):
            tname = self._engine.get_tensor_name(i)
            dtype_name = self._engine.get_tensor_dtype(tname).name
            if dtype_name not in NP_DTYPES:
                raise EngineLoadError(
                    f"{self.path}: tensor {tname!r} has type {dtype_name}, which fcn-deploy cannot feed"
                )
            is_input = self._engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append(
                _Binding(tname, NP_DTYPES[dtype_name], is_input)
            )
        if len(self._inputs) != 1:
            raise EngineLoadError(
                f"{self.path}: expected one image input, found {[b.name for b in self._inputs]}"
            )
        if self.manifest is not None and self.manifest.io_tensors:
            expected = sorted(t["name"] for t in self.manifest.io_tensors)
            found = sorted(b.name for b in (*self._inputs, *self._outputs))
            if expected != found:
                raise EngineLoadError(
                    f"{self.path}: engine tensors {found} differ from its manifest's {expected}; rebuild it"
                )
        shapes = self._engine.get_tensor_profile_shape(self._inputs[0].name, 0)
        if len(shapes) == 3:
            lo, opt, hi = (tuple(s) for s in shapes)
        else:  # a static-shape engine has no profile to report
            lo = opt = hi = tuple(self._engine.get_tensor_shape(self._inputs[0].name))
        self.profile = Profile(
            self._inputs[0].name, (lo[0], opt[0], hi[0]), (lo[2], lo[3]), (opt[2], opt[3]), (hi[2], hi[3])
        )
        self._kinds = {o.name: o.kind for o in self.card.outputs}
        self._stream = cuda_rt.Stream()
        self._start, self._end = cuda_rt.Event(), cuda_rt.Event()
        self._use_graph = cuda_graph
        self._graph: cuda_rt.CudaGraph | None = None
        self._shape: tuple[int, ...] | None = None
        self.last_device_ms: float | None = None

    def _use_device(self) -> None:
        """cudaSetDevice on the calling thread, once per thread (the current device is thread-local)."""
        ident = threading.get_ident()
        if ident not in self._device_threads:
            cuda_rt.call("cudaSetDevice", self.device)
            self._device_threads.add(ident)

    # --- buffers ---------------------------------------------------------------------------------------
    def _prepare(self, shape: tuple[int, ...]) -> None:
        """Reuse buffers while the shape repeats; on a new shape, set it and reallocate everything."""
        if shape == self._shape:
            return
        self._drop_graph()
        inp = self._inputs[0]
        if not self._context.set_input_shape(inp.name, shape):
            raise FcnDeployError(f"TensorRT rejected input shape {shape}: {self._logger.store.reason()}")
        inp.allocate(shape)
        for b in self._outputs:
            b.allocate(tuple(self._context.get_tensor_shape(b.name)))
        for b in (inp, *self._outputs):
            self._context.set_tensor_address(b.name, b.device.ptr)
        self._shape = shape

    def _enqueue(self) -> None:
        inp = self._inputs[0]
        self._stream.copy_to_device(inp.device.ptr, inp.host.ptr, inp.nbytes)
        if not self._context.execute_async_v3(int(self._stream)):
            raise FcnDeployError(f"TensorRT inference failed: {self._logger.store.reason()}")
        for b in self._outputs:
            self._stream.copy_to_host(b.host.ptr, b.device.ptr, b.nbytes)

    def _drop_graph(self) -> None:
        if self._graph is not None:
            self._graph.destroy()
            self._graph = None

    # --- Backend ---------------------------------------------------------------------------------------
    @property
    def input_sizes(self) -> ShapeRange:
        return self.profile.sizes

    @property
    def output_kinds(self) -> tuple[str, ...]:
        return tuple(k for b in self._outputs if (k := self._kinds.get(b.name)) in ("logits", "probs"))

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self._use_device()
        self.profile.check_input(tuple(batch.shape))
        shape = tuple(int(d) for d in batch.shape)
        self._prepare(shape)
        inp = self._inputs[0]
        np.copyto(inp.view(), batch, casting="same_kind")  # float32 -> float16 when the engine takes FP16
        self._start.record(self._stream)
        if self._graph is not None:
            self._graph.launch()
        else:
            self._enqueue()
        self._end.record(self._stream)
        self._stream.synchronize()
        self.last_device_ms = self._end.elapsed_ms(self._start)
        if self._use_graph and self._graph is None:
            self._capture()  # after one plain run at this shape (TensorRT's own recommendation)
        return self._collect()

    def _capture(self) -> None:
        graph = cuda_rt.CudaGraph(self._stream)
        graph.begin()
        try:
            self._enqueue()
        finally:
            graph.end()
        self._graph = graph

    def _collect(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for b in self._outputs:
            kind = self._kinds.get(b.name)
            data = np.array(b.view())  # copy: the pinned buffer is reused by the next call
            if kind == "labels":
                if data.ndim == 4 and data.shape[1] == 1:
                    data = data[:, 0]
                out["labels"] = data if data.dtype in LABEL_DTYPES else data.astype(np.int32)
            elif kind in ("logits", "probs"):
                out[kind] = data.astype(np.float32, copy=False)
        if "labels" not in out:
            scores = out.get("logits", out.get("probs"))
            if scores is None:
                raise FcnDeployError(
                    f"{self.path}: engine outputs {[b.name for b in self._outputs]} match none of the model card's "
                    f"outputs {list(self._kinds)}; rebuild from the matching ONNX"
                )
            out["labels"] = scores.argmax(axis=1).astype(np.int32)
        return out

    def layer_times(self, batch: np.ndarray, iterations: int) -> list[dict[str, Any]]:
        """Mean milliseconds per layer over `iterations` runs of `batch`, in engine order.

        A second execution context carries the profiler (on the same buffers), so the timed context keeps its
        CUDA graph and never pays the profiler's per-layer synchronisation.
        """
        from fcn_deploy.engine.layer_profiler import layer_profiler

        self._use_device()
        self.run(batch)  # sets the shape and fills the input buffer
        profiler = layer_profiler()
        context = self._engine.create_execution_context()
        if context is None:
            raise EngineLoadError(
                f"{self.path}: no execution context to profile: {self._logger.store.reason()}"
            )
        context.profiler = profiler
        inp = self._inputs[0]
        context.set_input_shape(inp.name, inp.shape)
        for b in (inp, *self._outputs):
            context.set_tensor_address(b.name, b.device.ptr)
        try:
            for _ in range(max(1, iterations)):
                if not context.execute_async_v3(int(self._stream)):
                    raise FcnDeployError(f"TensorRT inference failed: {self._logger.store.reason()}")
                self._stream.synchronize()
        finally:
            del context
        return profiler.means()

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "backend": self.name,
            "engine": str(self.path),
            "tensorrt": self.trt_version,
            "gpu": self.gpu_name,
            "precision": m.precision if m else "unknown (trusted plan)",
            "profile": self.profile.to_dict(),
            "cuda_graph": self._use_graph,
            "last_device_ms": self.last_device_ms,
        }

    def close(self) -> None:
        self._use_device()
        self._drop_graph()
        for b in (*self._inputs, *self._outputs):
            b.free()
        for obj in (self._start, self._end, self._stream):
            obj.destroy()
        self._context = self._engine = None
        self._shape = None
