"""Everything that can run on a machine with an NVIDIA GPU, in one JSON summary (issue 12's device check).

Run on the GPU machine: `python tools/device_check.py` (about a minute; well inside 8). Each check records ok,
skipped (with the reason: no torch CUDA, no onnxruntime-gpu, no TensorRT) or failed (with the error), so one run
says what works there. Written without a GPU at hand: it has not been run on one yet.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fcn_deploy.core.environment import fingerprint  # noqa: E402
from fcn_deploy.core.model_config import ModelConfig  # noqa: E402

RESULTS: dict[str, Any] = {}


def check(name: str) -> Callable[[Callable[[], Any]], None]:
    def run(fn: Callable[[], Any]) -> None:
        t0 = time.perf_counter()
        try:
            RESULTS[name] = {"status": "ok", **(fn() or {})}
        except SkipCheck as e:
            RESULTS[name] = {"status": "skipped", "reason": str(e)}
        except Exception as e:  # a device check reports every failure and goes on
            RESULTS[name] = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                             "traceback": traceback.format_exc(limit=3)}
        RESULTS[name]["seconds"] = round(time.perf_counter() - t0, 2)

    return run


class SkipCheck(Exception):
    pass


def torch_cuda() -> Any:
    try:
        import torch
    except ImportError:
        raise SkipCheck("torch is not installed") from None
    if not torch.cuda.is_available():
        raise SkipCheck("torch sees no CUDA device")
    return torch


@check("cuda_helpers")
def _cuda_helpers() -> dict[str, Any]:
    from fcn_deploy.core.errors import MissingDependencyError
    from fcn_deploy.engine import cuda_rt

    try:
        name, cc = cuda_rt.device_info(0)
    except MissingDependencyError as e:  # no cuda-python or no GPU visible
        raise SkipCheck(str(e)) from None
    data = np.arange(1 << 20, dtype=np.float32)
    dev, pinned, back = cuda_rt.DeviceBuffer(data.nbytes), cuda_rt.PinnedBuffer(data.nbytes), cuda_rt.PinnedBuffer(data.nbytes)
    stream, start, end = cuda_rt.Stream(), cuda_rt.Event(), cuda_rt.Event()
    pinned.view(np.float32, data.shape)[:] = data
    start.record(stream)
    stream.copy_to_device(dev.ptr, pinned.ptr, data.nbytes)
    stream.copy_to_host(back.ptr, dev.ptr, data.nbytes)
    end.record(stream)
    stream.synchronize()
    same = bool(np.array_equal(back.view(np.float32, data.shape), data))
    ms = end.elapsed_ms(start)
    for obj in (dev, pinned, back, stream, start, end):
        (obj.free if hasattr(obj, "free") else obj.destroy)()
    if not same:
        raise RuntimeError("a host -> device -> host round trip changed the data")
    return {"gpu": name, "compute_capability": list(cc), "roundtrip_4MiB_ms": round(ms, 3), **cuda_rt.versions()}


def tiny_model(torch: Any) -> Any:
    from fcn_deploy.training.fcn import build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(variant="fcn8s", num_classes=5, width=0.25, padding="same")).eval()


@check("torch_cuda_parity")
def _torch_parity() -> dict[str, Any]:
    torch = torch_cuda()
    model = tiny_model(torch)
    x = torch.randn(2, 3, 96, 128)
    with torch.inference_mode():
        cpu = model(x)
        gpu = model.cuda()(x.cuda()).cpu()
    agree = float((cpu.argmax(1) == gpu.argmax(1)).float().mean())
    return {"max_abs_diff": float((cpu - gpu).abs().max()), "label_agreement": agree}


@check("amp_training_steps")
def _amp_steps() -> dict[str, Any]:
    torch = torch_cuda()
    model = tiny_model(torch).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    scaler = torch.amp.GradScaler("cuda")
    x, y = torch.randn(4, 3, 64, 64, device="cuda"), torch.randint(0, 5, (4, 64, 64), device="cuda")
    losses = []
    for _ in range(5):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss))
    if not all(np.isfinite(losses)):
        raise RuntimeError(f"non-finite AMP losses {losses}")
    return {"losses": losses}


def export_tiny(folder: Path) -> Path:
    import torch

    from fcn_deploy.core.card import ModelCard
    from fcn_deploy.export import ExportOptions, export_onnx

    model = tiny_model(torch)
    card = ModelCard.default("fcn8s", 5, width=0.25, padding="same")
    out = folder / "tiny.onnx"
    export_onnx(model, card, out, ExportOptions(opt_shape=(96, 128), min_shape=(32, 32), max_shape=(256, 256)))
    return out


@check("onnxruntime_cuda_provider")
def _ort_cuda() -> dict[str, Any]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SkipCheck(f"onnxruntime has no CUDA provider ({ort.get_available_providers()})")
    from fcn_deploy.chain.backends import open_backend

    with tempfile.TemporaryDirectory() as tmp:
        path = export_tiny(Path(tmp))
        x = np.random.default_rng(0).standard_normal((1, 3, 96, 128), np.float32)
        with open_backend(path, "onnxruntime", "cpu") as cpu, open_backend(path, "onnxruntime", "cuda") as gpu:
            agree = float(np.mean(cpu.run(x)["labels"] == gpu.run(x)["labels"]))
    return {"label_agreement_vs_cpu": agree}


@check("tensorrt_build_and_run")
def _tensorrt() -> dict[str, Any]:
    from fcn_deploy.engine import trt_compat

    if not trt_compat.tensorrt_available():
        raise SkipCheck("TensorRT is not installed")
    from fcn_deploy.chain.backends import open_backend
    from fcn_deploy.chain.engine import EngineFromOnnx
    from fcn_deploy.core.card import ModelCard
    from fcn_deploy.core.onnx_io import load_onnx
    from fcn_deploy.engine.build import BuildOptions
    from fcn_deploy.engine.profile_shapes import profile_from_card

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_tiny(Path(tmp))
        engine = Path(tmp) / "tiny.engine"
        card = ModelCard.from_onnx(load_onnx(onnx_path), str(onnx_path))
        EngineFromOnnx(onnx_path, engine, BuildOptions(profile=profile_from_card(card)))()
        x = np.random.default_rng(0).standard_normal((1, 3, 96, 128), np.float32)
        with open_backend(onnx_path, "onnxruntime", "cpu") as ref, open_backend(engine, "tensorrt") as trt:
            agree = float(np.mean(ref.run(x)["labels"] == trt.run(x)["labels"]))
            device_ms = trt.last_device_ms
    return {"label_agreement_vs_ort_cpu": agree, "device_ms": device_ms}


if __name__ == "__main__":
    print(json.dumps({"environment": fingerprint(RESULTS.get("cuda_helpers", {}).get("gpu") and {"name": RESULTS["cuda_helpers"]["gpu"]}), "checks": RESULTS}, indent=2, default=str))
    sys.exit(1 if any(r["status"] == "failed" for r in RESULTS.values()) else 0)
