"""Helpers for the contract tests: put the strict TensorRT / cuda-python doubles (tests/doubles) first on sys.path.

The doubles say nothing about TensorRT's speed or numerics: they check that our code follows the API contract.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOUBLES = Path(__file__).resolve().parent / "doubles"
ENV = {
    "version": "FCN_DEPLOY_TRT_DOUBLE_VERSION",
    "cuda_python": "FCN_DEPLOY_CUDA_DOUBLE_VERSION",
    "driver": "FCN_DEPLOY_CUDA_DOUBLE_DRIVER",
    "devices": "FCN_DEPLOY_CUDA_DOUBLE_DEVICES",
}
ORIN = "Orin (nvgpu):8.7:dla=2"


DOUBLE_MODULES = ("tensorrt", "cuda", "cuda.bindings", "cuda.bindings.runtime", "_gpu_double")


def _ours(name: str) -> bool:
    return name in DOUBLE_MODULES or name.startswith(("tensorrt.", "cuda."))


def purge() -> None:
    for name in list(sys.modules):
        if _ours(name):
            del sys.modules[name]


def use_double(monkeypatch, **settings) -> None:
    """Select the doubles in this process. Undone by monkeypatch: sys.path, the variables, and sys.modules (every
    tensorrt/cuda module present before comes back, the doubles' modules go), so later tests see the real machine."""
    for name in sorted({n for n in sys.modules if _ours(n)} | set(DOUBLE_MODULES)):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name))  # records the old value (or absence)
    for key, var in ENV.items():
        if key in settings:
            monkeypatch.setenv(var, str(settings[key]))
        else:
            monkeypatch.delenv(var, raising=False)
    purge()
    monkeypatch.syspath_prepend(str(DOUBLES))


def env(**settings) -> dict[str, str]:
    """Environment for a subprocess that runs against the doubles."""
    import os

    out = dict(os.environ)
    for key, var in ENV.items():
        out.pop(var, None)
        if key in settings:
            out[var] = str(settings[key])
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(DOUBLES), out.get("PYTHONPATH")]))
    return out
