"""`--backend auto` for a `.onnx` on the CPU: the fastest installed runtime for what the graph and the user ask.

The rule (measured by benchmarks/cpu_runtimes.py on three kinds of CPU; the figures are in the README):
  bf16 requested                        -> OpenVINO (the only runtime here that computes BF16; refused elsewhere)
  INT8 Q/DQ graph, either flavour       -> OpenVINO when installed, at the same accuracy (CamVid val, same graph:
                                           mean IoU within 0.03 points, agreement within 0.05%):
                                           TensorRT flavour: 0.34x our ORT FP32 on AMX (ONNX Runtime 1.8x), 0.48x
                                           on AVX2 alone (ONNX Runtime 1.13x, slower than FP32);
                                           ONNX Runtime flavour: 0.17x on AMX (ONNX Runtime 0.48x), 0.49x on AVX2
                                           (ONNX Runtime 0.59x)
  everything else (FP32, FP16 graphs)   -> ONNX Runtime, the portable fallback (and the one that carries the CUDA
                                           and TensorRT execution providers): FP32 goes either way by model
ONNX Runtime is also the choice whenever OpenVINO is not installed. The graph's precision is read from the model
card without parsing the graph (read_metadata skips the weights), so choosing costs no second model load.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from fcn_deploy.core.card import METADATA_KEY
from fcn_deploy.core.environment import cpu_flags

INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
_MODEL_METADATA_FIELD = 14  # onnx.ModelProto.metadata_props


def _varint(f) -> int | None:
    shift = result = 0
    while True:
        b = f.read(1)
        if not b:
            return None
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7


def read_metadata(path: str | Path) -> dict[str, str]:
    """An ONNX file's metadata_props without parsing its graph: walks the top-level protobuf fields and seeks over
    the others (the weights). {} for a file that is not a well-formed ModelProto (the backend reports that)."""
    from onnx import StringStringEntryProto

    out: dict[str, str] = {}
    with open(path, "rb") as f:
        while (tag := _varint(f)) is not None:
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                if _varint(f) is None:
                    return {}
            elif wire == 1:
                f.seek(8, 1)
            elif wire == 5:
                f.seek(4, 1)
            elif wire == 2:
                size = _varint(f)
                if size is None:
                    return {}
                if field == _MODEL_METADATA_FIELD:
                    data = f.read(size)
                    try:
                        entry = StringStringEntryProto.FromString(data)
                    except Exception:  # protobuf's DecodeError: not an ONNX file
                        return {}
                    out[entry.key] = entry.value
                else:
                    f.seek(size, 1)
            else:
                return {}
    return out


def graph_precision(path: str | Path) -> tuple[str, str | None]:
    """(precision of the graph per its model card, the Q/DQ flavour it was lowered for); ('fp32', None) when the
    file carries no readable card."""
    raw = read_metadata(path).get(METADATA_KEY)
    try:
        card = json.loads(raw) if raw else {}
    except ValueError:
        card = {}
    lowering = (card.get("provenance") or {}).get("lowering") or {}
    return str(card.get("precision") or "fp32"), lowering.get("target")


def choose_cpu_backend(
    path: str | Path, precision: str | None, cpuinfo: list[str] | None = None, openvino: bool | None = None
) -> tuple[str, str]:
    """(backend, why) for a .onnx on the CPU. `openvino`: whether it is installed (None: look)."""
    if openvino is None:
        openvino = importlib.util.find_spec("openvino") is not None
    if precision == "bf16":
        return "openvino", "bf16 runs on OpenVINO only"
    if not openvino:
        return "onnxruntime", "OpenVINO is not installed"
    graph, target = graph_precision(path)
    if graph == "int8":
        flags = cpu_flags(cpuinfo) or {}
        have = [f for f in INT8_FLAGS if flags.get(f)]
        where = f"a CPU with {'/'.join(have)}" if have else "an AVX2 CPU"
        return "openvino", f"INT8 ({target or 'Q/DQ'}) graph on {where}: OpenVINO is faster"
    return "onnxruntime", f"{graph.upper()} graph, where OpenVINO is not faster (README, CPU runtimes)"
