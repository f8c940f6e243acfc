"""PyTorch -> ONNX export with a model card, dynamic H/W and validation against PyTorch.

Lazy: `fcn_deploy.export.validate` checks existing files without torch, so importing the package must not pull
in the torch-side exporter until one of its names is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "ExportOptions": "fcn_deploy.export.options",
    "ExportReport": "fcn_deploy.export.onnx_export",
    "export_onnx": "fcn_deploy.export.onnx_export",
    "model_for_export": "fcn_deploy.export.onnx_export",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
