"""`model.engine.json`: what an engine was built from, by which TensorRT, for which GPU.

An engine is executable code for one TensorRT version and GPU, and TensorRT gives no integrity check (its
getEngineValidity accepts tampered plans). So every load checks this manifest first, before the plan reaches
TensorRT: sha256 of the plan, TensorRT version, compute capability, and optionally the source ONNX.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fcn_deploy import __version__
from fcn_deploy.core.atomic import sha256_file, write_text
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.engine.trt_compat import TrtVersion

FORMAT = "fcn-deploy-engine-manifest"
SCHEMA_VERSION = 1
MAX_MANIFEST_BYTES = 16 * 1024**2


class StaleEngineError(FcnDeployError):
    """The engine does not match its manifest or this machine; the message names the mismatch and the fix."""


@dataclass(frozen=True)
class EngineManifest:
    engine_sha256: str
    engine_bytes: int
    onnx_sha256: str
    onnx_file: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    profile: dict[str, Any]
    dla_core: int | None = None
    build_options: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    model_card: dict[str, Any] = field(default_factory=dict)
    io_tensors: list[dict[str, Any]] = field(default_factory=list)
    rebuild_command: str = ""
    fcn_deploy_version: str = __version__
    format: str = FORMAT
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: Any, source: str) -> EngineManifest:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise FcnDeployError(
                f"{source}: not an fcn-deploy engine manifest; rebuild the engine with build-engine"
            )
        if d.get("schema_version") != SCHEMA_VERSION:
            raise FcnDeployError(
                f"{source}: manifest schema {d.get('schema_version')!r} is not {SCHEMA_VERSION}; rebuild the engine"
            )
        try:
            kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
            kw["compute_capability"] = tuple(int(x) for x in d["compute_capability"])
            kw["engine_bytes"] = int(d["engine_bytes"])
            for key in ("engine_sha256", "onnx_sha256", "tensorrt_version", "gpu_name", "precision"):
                if not isinstance(d[key], str):
                    raise TypeError(f"{key} must be a string")
            if len(kw["compute_capability"]) != 2:
                raise ValueError("compute_capability must be [major, minor]")
            return cls(**kw)
        except (KeyError, TypeError, ValueError) as e:
            raise FcnDeployError(
                f"{source}: malformed engine manifest ({type(e).__name__}: {e}); rebuild"
            ) from None


def manifest_path(engine_path: str | Path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def write_manifest(engine_path: str | Path, manifest: EngineManifest) -> Path:
    """Atomic, and written after the engine so a manifest never describes a half-written plan."""
    path = manifest_path(engine_path)
    write_text(path, json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(engine_path: str | Path) -> EngineManifest:
    path = manifest_path(engine_path)
    if not path.is_file():
        raise StaleEngineError(
            f"{engine_path}: no manifest {path.name} beside it: unknown provenance, refusing to load it "
            "(engines are executable code). Rebuild it with `fcn-deploy build-engine`, or pass --trust if you "
            "built this plan yourself"
        )
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise FcnDeployError(f"{path}: {path.stat().st_size} bytes is too large for an engine manifest")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FcnDeployError(f"{path}: not valid JSON ({e}); rebuild the engine with build-engine") from None
    return EngineManifest.from_dict(data, str(path))


def _sm(cc: tuple[int, int]) -> str:
    return f"sm_{cc[0]}{cc[1]}"


def _version_ok(built: str, running: str, version_compatible: bool) -> bool:
    if built == running:
        return True
    if not version_compatible:
        return False
    b, r = TrtVersion.parse(built), TrtVersion.parse(running)
    # Version-compatible plans run on newer runtimes of the same major, plus 10 -> 11 (11.4 support matrix).
    return r >= b and (r.major == b.major or (b.major, r.major) == (10, 11))


def check_engine(
    engine_path: str | Path,
    *,
    tensorrt_version: str,
    compute_capability: tuple[int, int] | None,
    onnx_path: str | Path | None = None,
    trust: bool = False,
) -> EngineManifest | None:
    """Refuse (StaleEngineError naming the mismatch and the rebuild command) an engine that must not be loaded.

    Run before deserializing. `trust=True` skips the manifest (for a plan built by hand with trtexec) and
    returns None; an empty file is still refused because it cannot be a plan.
    """
    path = Path(engine_path)
    if not path.is_file():
        raise FcnDeployError(
            f"{path}: no such engine file; build one with `fcn-deploy build-engine MODEL.onnx`"
        )
    size = path.stat().st_size
    if size == 0:
        raise StaleEngineError(
            f"{path}: engine file is empty (0 bytes); rebuild it with `fcn-deploy build-engine`"
        )
    if trust:
        return None
    m = read_manifest(path)
    fix = (
        f"rebuild with `{m.rebuild_command}`"
        if m.rebuild_command
        else "rebuild it with `fcn-deploy build-engine`"
    )
    if size != m.engine_bytes or sha256_file(path) != m.engine_sha256:
        raise StaleEngineError(
            f"{path}: engine checksum mismatch with {manifest_path(path).name} (corrupt, truncated or tampered; "
            f"{size} bytes, manifest says {m.engine_bytes}); refusing to load it; {fix}"
        )
    if not _version_ok(m.tensorrt_version, tensorrt_version, bool(m.build_options.get("version_compatible"))):
        raise StaleEngineError(
            f"{path}: engine built with TensorRT {m.tensorrt_version}, running {tensorrt_version}; plans only load "
            f"in the TensorRT version that built them; {fix}"
        )
    if compute_capability is not None and tuple(compute_capability) != tuple(m.compute_capability):
        raise StaleEngineError(
            f"{path}: engine built for {m.gpu_name} ({_sm(m.compute_capability)}), this GPU is "
            f"{_sm(tuple(compute_capability))}: GPU {_sm(m.compute_capability)} vs {_sm(tuple(compute_capability))}; "
            f"{fix} on this machine"
        )
    if onnx_path is not None and sha256_file(onnx_path) != m.onnx_sha256:
        raise StaleEngineError(
            f"{path}: {onnx_path} changed after the engine was built (ONNX sha256 differs from the manifest); {fix}"
        )
    return m
