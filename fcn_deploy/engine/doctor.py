"""`fcn-deploy doctor`: what this machine can run, and the exact fix for what it cannot. Torch-free.

Reads the platform (Jetson module, L4T and JetPack from /etc/nv_tegra_release, the device tree and dpkg's
status file; else desktop), the NVIDIA driver, CUDA runtime, TensorRT, cuda-python (and whether its CUDA major
fits the driver), ONNX Runtime and its providers, PyTorch and CUDA (in a subprocess: this module never imports
torch), OpenCV's GStreamer/V4L2 support and DLA; then, per command, whether it can run here.
`root` lets tests point every file read at a fixture tree.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# L4T release -> JetPack (NVIDIA's JetPack archive); dpkg's nvidia-jetpack version wins where installed.
L4T_TO_JETPACK = {
    (36, 3): "6.0",
    (36, 4, 0): "6.1",
    (36, 4, 3): "6.2",
    (36, 4, 4): "6.2.1",
    (38, 2): "7.0",
    (38, 4): "7.1",
}
CUDA_PYTHON_SPEC = {12: "cuda-python>=12.6,<13", 13: "cuda-python>=13,<14"}


@dataclass
class Report:
    platform: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    commands: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"platform": self.platform, "checks": self.checks, "commands": self.commands}


def _read(root: Path, rel: str) -> str | None:
    path = root / rel.lstrip("/")
    try:
        return path.read_bytes().decode(errors="replace").replace("\0", "").strip()
    except OSError:
        return None


def jetpack_for_l4t(l4t: tuple[int, ...]) -> str | None:
    for key in (l4t[:3], l4t[:2]):
        if key in L4T_TO_JETPACK:
            return L4T_TO_JETPACK[key]
    return None


def dpkg_version(root: Path, package: str) -> str | None:
    status = _read(root, "/var/lib/dpkg/status")
    if not status:
        return None
    for block in status.split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", block, re.M):
            m = re.search(r"^Version: (\S+)", block, re.M)
            if m:
                return m.group(1)
    return None


def detect_platform(root: Path = Path("/")) -> dict[str, Any]:
    release = _read(root, "/etc/nv_tegra_release")
    model = _read(root, "/proc/device-tree/model")
    if not release and not (model and "jetson" in model.lower()):
        return {"kind": "desktop", "module": None, "l4t": None, "jetpack": None}
    l4t = None
    if release:
        m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", release)
        if m:
            l4t = tuple(int(g) for g in m.groups() if g is not None)
    jetpack = dpkg_version(root, "nvidia-jetpack")
    if jetpack:
        jetpack = jetpack.split("+")[0].split("-")[0]
    elif l4t:
        jetpack = jetpack_for_l4t(l4t)
    return {
        "kind": "jetson",
        "module": model,
        "l4t": ".".join(map(str, l4t)) if l4t else None,
        "jetpack": jetpack,
    }


def _jetpack_major(platform: dict[str, Any]) -> int | None:
    jp = platform.get("jetpack")
    return int(jp.split(".")[0]) if jp else None


# --- the checks -----------------------------------------------------------------------------------------
def check_cuda(root: Path) -> dict[str, Any]:
    from fcn_deploy.engine import cuda_rt

    out: dict[str, Any] = {"cuda_python": cuda_rt.cuda_python_version(), "driver": None, "runtime": None}
    proc = _read(root, "/proc/driver/nvidia/version")
    if proc:
        m = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", proc)
        out["driver_version"] = m.group(1) if m else None
    if out["cuda_python"] is None:
        out["ok"] = False
        out["reason"] = "cuda-python is not installed"
        return out
    rt = cuda_rt.cudart()
    err, driver = rt.cudaDriverGetVersion()
    out["driver"] = cuda_rt.format_cuda_version(driver) if err == rt.cudaError_t.cudaSuccess and driver else None
    err, runtime = rt.cudaRuntimeGetVersion()
    out["runtime"] = cuda_rt.format_cuda_version(runtime) if err == rt.cudaError_t.cudaSuccess else None
    out["driver_mismatch"] = cuda_rt.driver_mismatch()
    try:
        name, cc = cuda_rt.device_info(0)
        out.update(ok=True, gpu=name, compute_capability=f"{cc[0]}.{cc[1]}", cc=list(cc))
    except Exception as e:  # noqa: BLE001 - every failure is a reason to report
        out.update(ok=False, reason=str(e))
    return out


def check_tensorrt() -> dict[str, Any]:
    from fcn_deploy.engine import trt_compat

    if not trt_compat.tensorrt_available():
        return {"ok": False, "version": None, "reason": "TensorRT (module `tensorrt`) is not installed"}
    try:
        return {"ok": True, "version": trt_compat.installed_version().__str__(), "reason": None}
    except Exception as e:  # noqa: BLE001
        return {"ok": False, "version": None, "reason": str(e)}


def check_onnxruntime() -> dict[str, Any]:
    if importlib.util.find_spec("onnxruntime") is None:
        return {"ok": False, "version": None, "providers": [], "reason": "onnxruntime is not installed"}
    import onnxruntime as ort

    return {"ok": True, "version": ort.__version__, "providers": list(ort.get_available_providers())}


TORCH_PROBE = (
    "import json, torch; c = torch.cuda.is_available(); "
    "print(json.dumps({'version': torch.__version__, 'cuda': c, 'cuda_version': torch.version.cuda, "
    "'device': torch.cuda.get_device_name(0) if c else None}))"
)


def check_torch(timeout: float = 120.0) -> dict[str, Any]:
    if importlib.util.find_spec("torch") is None:
        return {"ok": False, "version": None, "cuda": False, "reason": "PyTorch is not installed"}
    try:
        proc = subprocess.run([sys.executable, "-c", TORCH_PROBE], capture_output=True, text=True, timeout=timeout)
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as e:
        return {"ok": False, "version": None, "cuda": False, "reason": f"PyTorch does not import: {e}"}
    return {"ok": True, **info}


def check_opencv() -> dict[str, Any]:
    if importlib.util.find_spec("cv2") is None:
        return {"ok": False, "version": None, "gstreamer": False, "v4l2": False, "reason": "OpenCV is not installed"}
    import cv2

    info = cv2.getBuildInformation()

    def flag(label: str) -> bool:
        m = re.search(rf"^\s*{label}:\s*(\S+)", info, re.M)
        return bool(m and m.group(1).upper() not in ("NO", "OFF"))

    return {"ok": True, "version": cv2.__version__, "gstreamer": flag("GStreamer"), "v4l2": flag(r"v4l/v4l2")}


def check_dla(tensorrt: dict[str, Any], cuda: dict[str, Any]) -> dict[str, Any]:
    from fcn_deploy.engine import trt_compat

    if not tensorrt.get("ok") or not cuda.get("ok"):
        return {"ok": False, "reason": "needs TensorRT and a GPU"}
    ok, reason = trt_compat.dla_supported(trt_compat.TrtVersion.parse(tensorrt["version"]), tuple(cuda["cc"]))
    return {"ok": ok, "reason": reason}


# --- fixes ----------------------------------------------------------------------------------------------
def cuda_python_fix(platform: dict[str, Any], cuda: dict[str, Any]) -> str:
    major = _jetpack_major(platform)
    if major is not None:
        spec = CUDA_PYTHON_SPEC[12] if major <= 6 else CUDA_PYTHON_SPEC[13]
        return f"pip install '{spec}' (JetPack {platform['jetpack']})"
    driver = cuda.get("driver")
    if driver:
        spec = CUDA_PYTHON_SPEC.get(int(driver.split(".")[0]), CUDA_PYTHON_SPEC[13])
        return f"pip install '{spec}' (driver CUDA {driver})"
    return f"pip install '{CUDA_PYTHON_SPEC[13]}' (driver >= 580) or '{CUDA_PYTHON_SPEC[12]}' (CUDA 12 drivers)"


def tensorrt_fix(platform: dict[str, Any], cuda: dict[str, Any]) -> str:
    if platform["kind"] == "jetson":
        return "sudo apt install nvidia-jetpack (or python3-libnvinfer): JetPack's TensorRT; not the pip wheel"
    driver = cuda.get("driver")
    extra = "tensorrt-cu12" if driver and int(driver.split(".")[0]) == 12 else "tensorrt-cu13"
    return f"pip install 'fcn-deploy[{extra}]'"


def gpu_fix(platform: dict[str, Any], cuda: dict[str, Any]) -> str:
    major = _jetpack_major(platform)
    version = cuda.get("cuda_python")
    if major is not None and version and int(version.split(".")[0]) != (12 if major <= 6 else 13):
        return cuda_python_fix(platform, cuda)  # e.g. cuda-python 13 on JetPack 6's CUDA 12.6 driver: error 35
    if cuda.get("driver_mismatch"):
        return cuda_python_fix(platform, cuda)
    if cuda.get("cuda_python") is None:
        return cuda_python_fix(platform, cuda)
    return "install the NVIDIA driver and run on a machine with an NVIDIA GPU (or a Jetson)"


def commands(platform: dict[str, Any], c: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    cuda, tensorrt_, ort, torch, cv = c["cuda"], c["tensorrt"], c["onnxruntime"], c["torch"], c["opencv"]
    rows: list[dict[str, Any]] = []

    def add(command: str, ok: bool, fix: str | None, why: str | None = None) -> None:
        rows.append({"command": command, "ok": ok, "why": None if ok else why, "fix": None if ok else fix})

    whys, fixes = [], []
    if not cuda.get("ok"):
        whys.append(cuda.get("driver_mismatch") or "no usable NVIDIA GPU/driver")
        fixes.append(gpu_fix(platform, cuda))
    if not tensorrt_["ok"]:
        whys.append(str(tensorrt_.get("reason")))
        fixes.append(tensorrt_fix(platform, cuda))
    trt_why = "; ".join(whys) or None
    trt_fix = " and ".join(fixes) or None
    add("build-engine", trt_fix is None, trt_fix, trt_why)
    add("infer --backend tensorrt", trt_fix is None, trt_fix, trt_why)
    add("infer --backend onnxruntime --device cpu", ort["ok"], "pip install 'fcn-deploy[cpu]'", ort.get("reason"))
    has_cuda_ep = "CUDAExecutionProvider" in ort.get("providers", [])
    ep_fix = (
        "install JetPack's onnxruntime-gpu wheel for your JetPack (not onnxruntime from PyPI)"
        if platform["kind"] == "jetson"
        else "pip uninstall onnxruntime && pip install 'fcn-deploy[gpu]'"
    )
    add("infer --backend onnxruntime --device cuda", has_cuda_ep, ep_fix,
        "this onnxruntime has no CUDAExecutionProvider")  # fmt: skip
    add("infer --backend torch", torch["ok"], "pip install 'fcn-deploy[train]'", torch.get("reason"))
    torch_gpu_fix = (
        "install NVIDIA's PyTorch wheel for your JetPack" if platform["kind"] == "jetson"
        else "install a CUDA build of PyTorch (https://pytorch.org/get-started/locally/)"
    )  # fmt: skip
    add("train --device cuda", bool(torch.get("cuda")), torch_gpu_fix if torch["ok"] else "pip install 'fcn-deploy[train]'",
        "PyTorch sees no CUDA device" if torch["ok"] else torch.get("reason"))  # fmt: skip
    gst_fix = (
        "use JetPack's OpenCV (sudo apt install python3-opencv) and pip uninstall opencv-python-headless"
        if platform["kind"] == "jetson" else "use an OpenCV built with GStreamer (e.g. the distribution's python3-opencv)"
    )  # fmt: skip
    add("infer --camera csi://N", bool(cv.get("gstreamer")), gst_fix, "OpenCV has no GStreamer support")
    add("infer --camera N (V4L2)", bool(cv.get("v4l2")), "pip install 'fcn-deploy[cpu]' (OpenCV with V4L2)",
        "OpenCV has no V4L2 support")  # fmt: skip
    return rows


def diagnose(root: Path = Path("/"), torch_timeout: float = 120.0) -> Report:
    platform = detect_platform(root)
    checks: dict[str, dict[str, Any]] = {}
    checks["cuda"] = check_cuda(root)
    checks["tensorrt"] = check_tensorrt()
    checks["onnxruntime"] = check_onnxruntime()
    checks["torch"] = check_torch(torch_timeout)
    checks["opencv"] = check_opencv()
    checks["dla"] = check_dla(checks["tensorrt"], checks["cuda"])
    return Report(platform, checks, commands(platform, checks))


def format_text(report: Report) -> str:
    p, c = report.platform, report.checks
    if p["kind"] == "jetson":
        where = f"Jetson: {p['module'] or 'unknown module'}, L4T {p['l4t'] or '?'}, JetPack {p['jetpack'] or 'unknown'}"
    else:
        where = "desktop / server (not a Jetson)"
    cuda, tensorrt_, ort, torch, cv, dla = (c[k] for k in ("cuda", "tensorrt", "onnxruntime", "torch", "opencv", "dla"))
    lines = [
        f"platform      {where}",
        f"driver        {cuda.get('driver_version') or '-'} (CUDA {cuda.get('driver') or 'none'})",
        f"GPU           {cuda.get('gpu') + ' sm_' + cuda['compute_capability'].replace('.', '') if cuda.get('ok') else 'none: ' + str(cuda.get('reason'))}",
        f"CUDA runtime  {cuda.get('runtime') or '-'}",
        f"cuda-python   {cuda.get('cuda_python') or 'not installed'}"
        + (f" (MISMATCH: {cuda['driver_mismatch']})" if cuda.get("driver_mismatch") else ""),
        f"TensorRT      {tensorrt_['version'] or 'not available: ' + str(tensorrt_.get('reason'))}",
        f"onnxruntime   {ort['version'] or 'not installed'} providers: {', '.join(ort.get('providers', [])) or '-'}",
        f"PyTorch       {torch.get('version') or 'not installed'} (CUDA: {'yes' if torch.get('cuda') else 'no'})",
        f"OpenCV        {cv.get('version') or 'not installed'} (GStreamer: {'yes' if cv.get('gstreamer') else 'no'}, "
        f"V4L2: {'yes' if cv.get('v4l2') else 'no'})",
        f"DLA           {'yes' if dla['ok'] else 'no'} ({dla['reason']})",
        "",
    ]  # fmt: skip
    width = max(len(r["command"]) for r in report.commands)
    for r in report.commands:
        state = "ok" if r["ok"] else f"no: {r['why']}; fix: {r['fix']}"
        lines.append(f"{r['command']:<{width}}  {state}")
    return "\n".join(lines)
