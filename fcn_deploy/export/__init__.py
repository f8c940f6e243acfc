"""PyTorch -> ONNX export with a model card, dynamic H/W and validation against PyTorch.

Lazy: `fcn_deploy.export.validate` checks existing files without torch, so importing the package must not pull
in the torch-side exporter until one of its names is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ExportOptions", "ExportReport", "export_onnx", "model_for_export"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("fcn_deploy.export.onnx_export"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
