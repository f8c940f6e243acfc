"""The one place that knows which TensorRT version can do what (10.3 on JetPack 6 ... 11.x on desktop).

Everything else asks this module instead of comparing version strings itself. Facts (TensorRT 11 migration
guide, support matrix, "Working with DLA", 11.4.1 release notes):
- 11.0 removed weak typing (BuilderFlag.FP16/INT8/...), INT8 calibrators and platform_has_fast_*: every network
  is strongly typed; precision comes from tensor types (FP16 ONNX, Q/DQ nodes).
- DLA: Orin with TensorRT 10.x up to 10.7, and again from 11.4.1 on JetPack 7.2.2+ (AGX Orin). Thor has none.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError

INSTALL_HINT = (
    "install it with `pip install 'fcn-deploy[tensorrt]'` on a desktop/server with an NVIDIA GPU, "
    "or use JetPack's TensorRT on Jetson (python3-libnvinfer)"
)
MIN_VERSION = (10, 3)  # JetPack 6 (Orin); older releases lack the I/O-by-name API used here
LAST_10X_WITH_DLA = (10, 7)
FIRST_11X_WITH_DLA = (11, 4, 1)
ORIN_SM = (8, 7)
THOR_SMS = ((10, 1), (11, 0))  # Thor reports sm_101 (CUDA 12.x) / sm_110 (CUDA 13)


@dataclass(frozen=True, order=True)
class TrtVersion:
    major: int
    minor: int
    patch: int = 0
    build: int = 0

    @classmethod
    def parse(cls, text: str) -> TrtVersion:
        """'10.3.0.30' / '11.4.1' / '10.7.0.post1' -> TrtVersion; FcnDeployError on anything else."""
        m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text))
        if not m:
            raise FcnDeployError(f"TensorRT version {text!r}: expected MAJOR.MINOR[.PATCH[.BUILD]]")
        return cls(*(int(g) if g is not None else 0 for g in m.groups()))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def require_supported(version: TrtVersion) -> None:
    if (version.major, version.minor) < MIN_VERSION:
        raise MissingDependencyError(
            f"TensorRT {version} is too old: fcn-deploy needs TensorRT >= {MIN_VERSION[0]}.{MIN_VERSION[1]} "
            f"(JetPack 6 or newer); {INSTALL_HINT}"
        )


def dla_supported(version: TrtVersion, compute_capability: tuple[int, int] | None) -> tuple[bool, str]:
    """(allowed, reason). `compute_capability` is the GPU's (major, minor), or None when unknown."""
    if compute_capability is None:
        return False, "no CUDA device found, so no DLA"
    cc = tuple(compute_capability)
    if cc in THOR_SMS:
        return False, f"Jetson Thor (sm_{cc[0]}{cc[1]}) has no DLA"
    if cc != ORIN_SM:
        return False, f"GPU sm_{cc[0]}{cc[1]} is not a Jetson Orin; only Orin has DLA cores"
    if version.major == 10 and (version.major, version.minor) <= LAST_10X_WITH_DLA:
        return True, f"Orin with TensorRT {version}"
    if version.major == 10:
        return False, (
            f"TensorRT {version} has no DLA support (10.7 was the last 10.x with DLA; use JetPack 6 with "
            "TensorRT 10.3, or JetPack 7.2.2+ with TensorRT 11.4.1+)"
        )
    if (version.major, version.minor, version.patch) >= FIRST_11X_WITH_DLA:
        return True, f"Orin with TensorRT {version}"
    return False, f"TensorRT {version} has no DLA support (it returns in 11.4.1 on JetPack 7.2.2+)"


def check_dla(
    version: TrtVersion, compute_capability: tuple[int, int] | None, core: int, num_cores: int
) -> None:
    """Refuse --dla-core before any building when this TensorRT/device pair has no such DLA core."""
    ok, reason = dla_supported(version, compute_capability)
    if not ok:
        raise FcnDeployError(f"--dla-core {core}: {reason}; drop --dla-core to build for the GPU")
    if not 0 <= core < num_cores:
        raise FcnDeployError(
            f"--dla-core {core}: this device has {num_cores} DLA core(s) (valid: 0..{max(num_cores - 1, 0)})"
        )


def tensorrt_available() -> bool:
    """Without importing it (find_spec): the CLI validates input first and reports a missing TensorRT last."""
    return importlib.util.find_spec("tensorrt") is not None


def import_tensorrt():
    """The tensorrt module, or MissingDependencyError (exit 3) naming what is missing and how to get it."""
    if not tensorrt_available():
        raise MissingDependencyError(f"TensorRT (Python module `tensorrt`) is not installed; {INSTALL_HINT}")
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # bindings present but libnvinfer missing or mismatched
        raise MissingDependencyError(
            f"TensorRT is installed but cannot be loaded ({e}); {INSTALL_HINT}"
        ) from None
    require_supported(TrtVersion.parse(trt.__version__))
    return trt


def installed_version() -> TrtVersion:
    return TrtVersion.parse(import_tensorrt().__version__)
