"""Check that every TensorRT Python API name fcn-deploy uses exists in real TensorRT 10.x and 11.x bindings.

TensorRT cannot be installed without NVIDIA's own index, but the `tensorrt-cu12-bindings` / `tensorrt-cu13-bindings`
wheels on PyPI hold the real pybind11 module (`tensorrt_bindings`). Its extension links against libnvinfer,
libnvinfer_plugin and libnvonnxparser; stub libraries exporting the few C entry points it imports (each returns
NULL) let it import, which is enough to inspect classes, enums, methods and properties. Nothing is executed.

The names are collected from our sources by AST (no hand-kept list): every attribute chain rooted at the
`tensorrt` module (`trt.X.Y`), plus attributes used on builder/config/network/parser/engine/context/... objects,
whose class is known from the call that made them or from the conventional variable name.

    python tools/trt_api_check.py                 # prints JSON, exit 0 when nothing is missing
    python tools/trt_api_check.py --extra BuilderFlag.FP16 --extra NoSuchThing   # must be reported missing
"""

from __future__ import annotations

import argparse
import ast
import ctypes
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = (
    *sorted((REPO / "fcn_deploy" / "engine").glob("*.py")),
)
# (pip package, version): JetPack 6's TensorRT and the current 11.x release.
DEFAULT_RELEASES = (("tensorrt-cu12-bindings", "10.3.0"), ("tensorrt-cu13-bindings", "11.4.0.106"))
CACHE = Path(os.environ.get("FCN_DEPLOY_TRT_CACHE", Path.home() / ".cache" / "fcn-deploy" / "trt-bindings"))
STUB_LIBS = ("libnvinfer", "libnvinfer_plugin", "libnvonnxparser")

# Classes of objects our code holds: by the factory that returns them ...
CONSTRUCTORS = {"Builder", "Runtime", "OnnxParser", "ILogger"}
RETURNS = {
    ("Builder", "create_network"): "INetworkDefinition",
    ("Builder", "create_builder_config"): "IBuilderConfig",
    ("Builder", "create_optimization_profile"): "IOptimizationProfile",
    ("IBuilderConfig", "create_timing_cache"): "ITimingCache",
    ("IBuilderConfig", "get_timing_cache"): "ITimingCache",
    ("OnnxParser", "get_error"): "ParserError",
    ("INetworkDefinition", "get_input"): "ITensor",
    ("INetworkDefinition", "get_output"): "ITensor",
    ("Runtime", "deserialize_cuda_engine"): "ICudaEngine",
    ("ICudaEngine", "create_execution_context"): "IExecutionContext",
}
# ... and by conventional names for parameters and private attributes (`self._engine`).
NAME_TYPES = {
    "builder": "Builder",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "config": "IBuilderConfig",
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "err": "ParserError",
    "cache": "ITimingCache",
}


class Unavailable(RuntimeError):
    """The bindings could not be fetched or loaded here (no network, no compiler): a reason to skip, not a failure."""


# --- 1. collect the names ------------------------------------------------------------------------------
def _chain(node: ast.AST) -> list[str] | None:
    """a.b.c -> ['a', 'b', 'c'] when the root is a plain name (or `self._x`), else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


class _Collector(ast.NodeVisitor):
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.modules = {"trt"}  # `trt` is also how tensorrt is passed around as a parameter
        self.scopes: list[dict[str, str]] = [{}]
        self.found: dict[str, list[str]] = {}

    def _add(self, name: str, node: ast.AST) -> None:
        self.found.setdefault(name, []).append(f"{self.filename}:{node.lineno}")

    def _type_of(self, expr: ast.AST) -> str | None:
        if isinstance(expr, ast.Call):
            chain = _chain(expr.func)
            if chain and chain[0] in self.modules and len(chain) == 2 and chain[1] in CONSTRUCTORS:
                return chain[1]
            if chain and len(chain) >= 2:
                owner = self._type_of_chain(chain[:-1])
                return RETURNS.get((owner, chain[-1])) if owner else None
        return None

    def _type_of_chain(self, chain: list[str]) -> str | None:
        if len(chain) == 1:
            for scope in reversed(self.scopes):
                if chain[0] in scope:
                    return scope[chain[0]]
            return None
        if len(chain) == 2 and chain[0] == "self" and chain[1].startswith("_"):
            return self.scopes[0].get("self." + chain[1]) or NAME_TYPES.get(chain[1].lstrip("_"))
        return None

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name == "tensorrt":
                self.modules.add(a.asname or a.name)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        params = {
            a.arg: NAME_TYPES[a.arg] for a in node.args.args + node.args.kwonlyargs if a.arg in NAME_TYPES
        }
        self.scopes.append(params)
        self.generic_visit(node)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        typ = self._type_of(node.value)
        for target in node.targets:
            chain = _chain(target)
            if not chain:
                continue
            if len(chain) == 1:
                self.scopes[-1][chain[0]] = typ or NAME_TYPES.get(chain[0])
            elif typ and len(chain) == 2 and chain[0] == "self":
                self.scopes[0]["self." + chain[1]] = typ

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _chain(node)
        if chain is None:
            if (typ := self._type_of(node.value)) is not None:  # e.g. config.get_timing_cache().serialize
                self._add(f"{typ}.{node.attr}", node)
            self.generic_visit(node)
            return
        if chain[0] in self.modules:
            self._add(".".join(chain[1:]), node)
        elif (typ := self._type_of_chain(chain[:2] if chain[0] == "self" else chain[:1])) is not None:
            rest = chain[2:] if chain[0] == "self" else chain[1:]
            if rest:
                self._add(f"{typ}.{rest[0]}", node)
        # a maximal chain was handled as a whole: do not revisit its prefixes


def collect_chains(paths: tuple[Path, ...] | list[Path] = SOURCES) -> dict[str, list[str]]:
    """Every TensorRT name our modules use -> where ('file:line'). Resolved against the `tensorrt` module."""
    found: dict[str, list[str]] = {}
    for path in paths:
        collector = _Collector(
            str(Path(path).relative_to(REPO)) if Path(path).is_relative_to(REPO) else str(path)
        )
        collector.visit(ast.parse(Path(path).read_text(encoding="utf-8"), str(path)))
        for name, where in collector.found.items():
            found.setdefault(name, []).extend(where)
    return dict(sorted(found.items()))


# --- 2. fetch real bindings and make them importable ---------------------------------------------------
def fetch_wheel(package: str, version: str, cache: Path = CACHE) -> Path:
    """Download (once) and unpack the bindings wheel; returns the folder that holds `tensorrt_bindings/`."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"{package.replace('-', '_')}-{version}-"
    wheels = sorted(cache.glob(f"{stem}*.whl"))
    if not wheels:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            str(cache),
            f"{package}=={version}",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise Unavailable(f"pip download {package}=={version} failed: {e}") from None
        wheels = sorted(cache.glob(f"{stem}*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise Unavailable(f"pip download {package}=={version} failed: {tail[0]}")
    target = cache / wheels[-1].name.removesuffix(".whl")
    if not (target / "tensorrt_bindings").is_dir():
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(wheels[-1]) as zf:
            zf.extractall(tmp)
        try:
            tmp.replace(target)
        except OSError:  # another process unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _extension(wheel_dir: Path) -> Path:
    found = sorted((wheel_dir / "tensorrt_bindings").glob("tensorrt*.so"))
    if not found:
        raise Unavailable(f"{wheel_dir}: no tensorrt_bindings extension module (not a Linux wheel?)")
    return found[0]


def _needed_majors(ext: Path) -> str:
    out = subprocess.run(["readelf", "-d", str(ext)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "libnvinfer.so." in line:
            return line.rsplit("libnvinfer.so.", 1)[1].rstrip("]").strip()
    raise Unavailable(f"{ext}: does not link libnvinfer.so.N")


def build_stubs(wheel_dir: Path) -> Path:
    """Stub libnvinfer/libnvinfer_plugin/libnvonnxparser.so.N exporting the C symbols the extension imports."""
    ext = _extension(wheel_dir)
    if not (shutil.which("nm") and shutil.which("readelf") and shutil.which("gcc")):
        raise Unavailable("nm, readelf and gcc are needed to build the stub libraries")
    major = _needed_majors(ext)
    stub_dir = wheel_dir / "stubs"
    if all((stub_dir / f"{lib}.so.{major}").is_file() for lib in STUB_LIBS):
        return stub_dir
    out = subprocess.run(
        ["nm", "-D", "--undefined-only", str(ext)], capture_output=True, text=True, check=True
    )
    here = ctypes.CDLL(None)  # what Python, libc and libstdc++ already provide needs no stub
    symbols = []
    for line in out.stdout.splitlines():
        name = line.split()[-1]
        if "@" in name or line.split()[0] == "w" or hasattr(here, name):
            continue
        symbols.append(name)
    if not symbols:
        raise Unavailable(f"{ext}: found no unresolved TensorRT entry points to stub")
    stub_dir.mkdir(exist_ok=True)
    src = stub_dir / "stub.c"
    src.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols))
    for lib in STUB_LIBS:
        so = f"{lib}.so.{major}"
        subprocess.run(
            ["gcc", "-shared", "-fPIC", f"-Wl,-soname,{so}", "-o", str(stub_dir / so), str(src)],
            check=True,
            capture_output=True,
        )
    return stub_dir


_INSPECT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import tensorrt_bindings as trt
missing = []
for chain in json.loads(sys.argv[2]):
    obj = trt
    for part in chain.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            missing.append(chain)
            break
print(json.dumps({"version": trt.__version__, "missing": missing}))
"""


def inspect_release(package: str, version: str, chains: list[str], cache: Path = CACHE) -> dict:
    """Import the real bindings of one release (in a subprocess, with stubs) and list the chains it lacks."""
    wheel_dir = fetch_wheel(package, version, cache)
    stubs = build_stubs(wheel_dir)
    env = dict(
        os.environ,
        LD_LIBRARY_PATH=os.pathsep.join(filter(None, [str(stubs), os.environ.get("LD_LIBRARY_PATH")])),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _INSPECT, str(wheel_dir), json.dumps(chains)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if proc.returncode != 0:
        raise Unavailable(f"{package}=={version} did not import with stubs: {proc.stderr.strip()[-400:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"package": package, **result, "checked": len(chains)}


def check(releases=DEFAULT_RELEASES, extra: tuple[str, ...] = (), cache: Path = CACHE) -> dict:
    used = collect_chains()
    chains = sorted(set(used) | set(extra))
    report = {"sources": [str(p.relative_to(REPO)) for p in SOURCES], "chains": chains, "releases": {}}
    for package, version in releases:
        report["releases"][version] = inspect_release(package, version, chains, cache)
    report["ok"] = not any(r["missing"] for r in report["releases"].values())
    report["missing_where"] = {
        c: used.get(c, ["--extra"]) for r in report["releases"].values() for c in r["missing"]
    }
    return report


# --- 3. the contract double's own surface (tests/doubles) ------------------------------------------------
DOUBLES = REPO / "tests" / "doubles"
# The real 11.x bindings wheel on PyPI (11.4.0.106) stands in for 11.4.1, which is what the double says it is.
DOUBLE_RELEASES = {"10.3.0": DEFAULT_RELEASES[0], "11.4.1": DEFAULT_RELEASES[1]}

_SURFACE = r"""
import enum, inspect, json, sys
sys.path.insert(0, sys.argv[1])
import tensorrt as trt
names = []
def walk(obj, prefix, depth=0):
    for key, value in vars(obj).items():
        if key.startswith("_") and key != "__init__" or key == "__init__" and value is object.__init__:
            continue
        if key in ("__init__",) and not inspect.isfunction(value):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, type) and issubclass(value, enum.Enum):
            names.append(name)
            names.extend(f"{name}.{m}" for m in value.__members__)
        elif isinstance(value, type) and depth < 2 and value.__module__ == "tensorrt":
            names.append(name)
            walk(value, name + ".", depth + 1)
        elif isinstance(value, enum.Enum):
            names.append(name)
        elif not inspect.ismodule(value):
            names.append(name)
walk(trt, "")
print(json.dumps(sorted(set(names))))
"""


def double_surface(version: str) -> list[str]:
    """Every public name the `tensorrt` double offers when it behaves as `version` (classes, methods,
    properties, enum members), found by walking the module: nothing hand-listed."""
    env = dict(os.environ, FCN_DEPLOY_TRT_DOUBLE_VERSION=version)
    proc = subprocess.run(
        [sys.executable, "-c", _SURFACE, str(DOUBLES)], capture_output=True, text=True, env=env, timeout=120
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the TensorRT double did not import as {version}: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout)


def check_double(version: str, cache: Path = CACHE) -> dict:
    """The double's surface for `version` checked against the real bindings of that release."""
    package, real = DOUBLE_RELEASES[version]
    chains = [c for c in double_surface(version) if c != "__version__"]
    return inspect_release(package, real, chains, cache)


def double_cuda_surface() -> list[str]:
    """Public names of the `cuda.bindings.runtime` double (functions, classes, enum members)."""
    import ast as _ast

    tree = _ast.parse((DOUBLES / "cuda" / "bindings" / "runtime.py").read_text(encoding="utf-8"))
    names = []
    for node in tree.body:
        if isinstance(node, (_ast.FunctionDef, _ast.ClassDef)) and not node.name.startswith("_"):
            names.append(node.name)
            if isinstance(node, _ast.ClassDef):
                for item in node.body:
                    if isinstance(item, _ast.Assign) and isinstance(item.targets[0], _ast.Name):
                        if not item.targets[0].id.startswith("_"):
                            names.append(f"{node.name}.{item.targets[0].id}")
                    elif isinstance(item, _ast.FunctionDef) and not item.name.startswith("_"):
                        names.append(f"{node.name}.{item.name}")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--release",
        action="append",
        metavar="PACKAGE==VERSION",
        help="bindings wheel to check (repeatable); default: 10.3.0 (cu12) and 11.4.0.106 (cu13)",
    )
    ap.add_argument(
        "--extra", action="append", default=[], help="also check this name (e.g. BuilderFlag.FP16)"
    )
    ap.add_argument("--cache", type=Path, default=CACHE, help=f"wheel/stub cache (default {CACHE})")
    ap.add_argument(
        "--list", action="store_true", help="only print the collected names and where they are used"
    )
    ap.add_argument(
        "--double",
        action="store_true",
        help="check the contract double's surface (tests/doubles) against the real 10.3 and 11.x bindings",
    )
    args = ap.parse_args(argv)
    if args.list:
        print(json.dumps(collect_chains(), indent=1))
        return 0
    if args.double:
        try:
            reports = {v: check_double(v, args.cache) for v in DOUBLE_RELEASES}
        except Unavailable as e:
            print(json.dumps({"ok": None, "unavailable": str(e)}))
            return 2
        ok = not any(r["missing"] for r in reports.values())
        print(json.dumps({"ok": ok, "releases": reports}, indent=1))
        return 0 if ok else 1
    releases = tuple(tuple(r.split("==", 1)) for r in args.release) if args.release else DEFAULT_RELEASES
    try:
        report = check(releases, tuple(args.extra), args.cache)
    except Unavailable as e:
        print(json.dumps({"ok": None, "unavailable": str(e)}))
        return 2
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
