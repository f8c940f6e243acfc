"""Every `fcn-deploy` command in README.md's ```bash blocks runs, in order, in one folder, through the real CLI.

A README command runs as written except for the substitutions in ADAPT (CI has no CamVid and two cores: synthetic
data, tiny sizes, one epoch), with the files make_fixtures writes (what the README takes as given: images, a
clip). A command that cannot run here is in SKIP with its reason; a new README command that is neither runnable
nor listed fails, and so does a table entry that no longer matches any README command (the tables stay honest).
Each command must exit 0 and must not change a file an earlier README command made: following the README never
replaces an output silently. The static test checks that no two README commands (skipped ones included, across
all blocks, since later blocks use earlier blocks' files) write one path, from the parsed arguments (no run).
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from fcn_deploy.cli import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _no_bf16() -> bool:
    from fcn_deploy.runtime.openvino_backend import bf16_refusal

    return bf16_refusal() is not None


def _always() -> bool:
    return True


# (regex on the README command, reason, when): commands that cannot run in CI. `when` says whether to skip here.
SKIP: list[tuple[str, str, Callable[[], bool]]] = [
    (r"^fcn-deploy train \.\.\. --resume", "elided arguments (`...`); --resume is tested in tests/test_train.py",
     _always),
    (r"^fcn-deploy build-engine ", "needs TensorRT and an NVIDIA GPU (exits 3 without them); the TensorRT path "
     "runs against the contract doubles (the PYTHONPATH=tests/doubles lines, tests/test_trt_contract.py)", _always),
    (r"--camera ", "needs a live camera (V4L2 / Jetson CSI)", _always),
    (r"--source rtsp://", "needs a live RTSP stream", _always),
    (r"^fcn-deploy package a100\.engine l4\.engine ", "needs TensorRT engines built on an A100 and an L4", _always),
    (r"^fcn-deploy serve ", "runs tritonserver until Ctrl-C (tests/test_serving_triton.py starts the real server)",
     _always),
    (r" triton://", "needs the server that `fcn-deploy serve` runs", _always),
    (r"--precision bf16", "needs a CPU with AVX512-BF16 or AMX (refused in one line elsewhere)", _no_bf16),
]  # fmt: skip

# (regex, replacement): applied in order to every command that runs. Small data, small sizes, no CamVid.
ADAPT: list[tuple[str, str]] = [
    (r"--dataset camvid --data-root data/camvid", "--dataset synthetic"),
    (r"--calib-dataset camvid:train --data-root data/camvid", "--calib-dataset synthetic:train"),
    (r"^(fcn-deploy model-info --variant fcn8s) --input-size", r"\1 --width 0.125 --input-size"),
    (r"^(fcn-deploy train)", r"\1 --synthetic-size 32x32 --synthetic-length 8"),
    (r"^(fcn-deploy (?:quantize|build-engine) .*--calib-\w+ \S+)", r"\1 --num-images 8 --eval-images 4"),
    (r"^(fcn-deploy (?:quantize|build-engine) .*--auto)", r"\1 --plan-images 4"),
    (r"^(fcn-deploy report)", r"\1 --max-images 4 --calib-images 8 --latency-s 0.05"),
    (r"--epochs \d+", "--epochs 1"),
    (r"--width 0\.25", "--width 0.125"),
    (r"^(fcn-deploy export --variant fcn8s)", r"\1 --width 0.125 --input-size 64x64"),
    (r"\b(?:360x480|544x960)\b", "64x64"),
    (r"\b(?:180x240|128x160|240x320)\b", "32x32"),
    (r"\b720x960\b", "96x96"),
    (r"--duration 10\b", "--duration 0.2"),
    (r"heatmap:cat\b", "heatmap:disc"),  # a class of the synthetic data
]

OUTPUT_PARAMS = ("output", "keep_onnx", "save_labels", "json_out")  # click parameter names that name a written path


@dataclass(frozen=True)
class Command:
    line: int  # README line where the command starts
    text: str  # env prefix + fcn-deploy ..., comments dropped, continuations joined

    def __str__(self) -> str:
        return f"README.md:{self.line} `{self.text}`"

    def skip(self) -> tuple[str, Callable[[], bool]] | None:
        return next(((why, when) for pattern, why, when in SKIP if re.search(pattern, self.text)), None)


def readme_commands() -> list[Command]:
    text = README.read_text(encoding="utf-8")
    out = []
    fences = re.finditer(r"^([ \t]*)```bash\n(.*?)^\1```", text, re.M | re.S)
    for m in fences:
        first = text.count("\n", 0, m.start()) + 2  # README line of the block's first line
        lines = textwrap.dedent(m.group(2)).splitlines()
        i = 0
        while i < len(lines):
            start, raw = i, lines[i]
            while raw.endswith("\\") and i + 1 < len(lines):  # a backslash continuation joins the next line
                i += 1
                raw = raw[:-1] + " " + lines[i]
            i += 1
            tokens = shlex.split(raw, comments=True)
            env = 0
            while env < len(tokens) and re.match(r"^[A-Za-z_]\w*=", tokens[env]):
                env += 1
            if tokens[env : env + 1] == ["fcn-deploy"]:
                out.append(Command(first + start, shlex.join(tokens)))
    return out


COMMANDS = readme_commands()


def adapt(text: str) -> str:
    for pattern, replacement in ADAPT:
        text = re.sub(pattern, replacement, text)
    return text


def split_env(text: str) -> tuple[dict[str, str], list[str]]:
    tokens = shlex.split(text)
    env = {}
    while "=" in tokens[0] and tokens[0] != "fcn-deploy":
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    return env, tokens[1:]


def test_the_readme_has_commands_and_every_table_entry_matches_one():
    assert len(COMMANDS) > 40, "README.md's ```bash blocks: fcn-deploy commands not found"
    for pattern, why, _ in SKIP:
        assert any(re.search(pattern, c.text) for c in COMMANDS), f"SKIP {pattern!r} ({why}): no README command"
    for pattern, _ in ADAPT:
        assert any(re.search(pattern, c.text) for c in COMMANDS), f"ADAPT {pattern!r}: no README command"


def parsed(cmd: Command) -> tuple[str, dict]:
    """The command's name and its parameters as click parses them (an unknown option or command fails here)."""
    _, args = split_env(cmd.text)
    ctx = click.Context(main)
    command = main.get_command(ctx, args[0])
    assert command is not None, f"{cmd}: no such command"
    with command.make_context(args[0], args[1:], parent=ctx, resilient_parsing=True) as sub:
        given = {k: v for k, v in sub.params.items() if isinstance(v, (str, Path, bool, int, float))}
    # Resilient parsing leaves defaults out: add the plain ones (click's own "no default" marker is no value).
    return args[0], {**{p.name: p.default for p in command.params if isinstance(p.default, (str, Path))}, **given}


def outputs_of(name: str, params: dict) -> list[Path]:
    """The paths a command writes, with the defaults the commands themselves use."""
    from fcn_deploy.calibration.api import default_output
    from fcn_deploy.chain.engine_plan import default_engine_path

    out = [Path(params[k]) for k in OUTPUT_PARAMS if isinstance(params.get(k), (str, Path)) and params[k] != "-"]
    if name == "quantize":
        main_out = Path(params.get("output") or default_output(Path(params["model"]), "int8" if params.get("int8")
                                                               else "fp16"))  # fmt: skip
        out += [main_out, main_out.with_suffix(".json")]  # the summary beside it
    if name == "build-engine":
        engine = Path(params.get("output") or default_engine_path(Path(params["model"])))
        out += [engine, engine.with_name(engine.name + ".json")]  # the manifest
    if name == "export" and params.get("output") is None:
        ck = params.get("checkpoint")
        out.append(Path(ck).with_suffix(".onnx") if ck else Path(f"{params.get('variant') or 'fcn8s'}.onnx"))
    return list(dict.fromkeys(Path(os.path.normpath(p)) for p in out))


def test_readme_commands_parse_and_write_distinct_outputs():
    """Every README command (skipped ones too) parses, and no two of them write the same path."""
    seen: dict[Path, Command] = {}
    clashes = []
    for cmd in COMMANDS:
        if "..." in cmd.text.split():  # elided arguments: `train ... --resume` continues an earlier run by design
            continue
        name, params = parsed(cmd)
        for path in outputs_of(name, params):
            if path in seen:
                clashes.append(f"{path}: {seen[path]} and {cmd}")
            seen.setdefault(path, cmd)
    assert not clashes, "README commands write the same file:\n" + "\n".join(clashes)


def make_fixtures(root: Path) -> None:
    """What the README takes as given: a folder of images, frames, one photo, a short clip."""
    import cv2

    from fcn_deploy.core.datasets.synthetic import SyntheticShapes

    ds = SyntheticShapes(split="test", size=(64, 64), length=6)
    (root / "images").mkdir()
    (root / "frames").mkdir()
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64))
    assert writer.isOpened()
    for i in range(len(ds)):
        image = np.ascontiguousarray(ds[i][0][:, :, ::-1])  # RGB -> BGR for OpenCV
        cv2.imwrite(str(root / "images" / f"img{i}.png"), image)
        if i < 3:
            cv2.imwrite(str(root / "frames" / f"f{i}.png"), image)
        writer.write(image)
    writer.release()
    cv2.imwrite(str(root / "cat.jpg"), np.ascontiguousarray(ds[0][0][:, :, ::-1]))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def cpu_s() -> float:
    """CPU seconds of this process and its finished children (the machine may be shared: wall time says less)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def run(cmd: Command, cwd: Path, cache: Path) -> tuple[int, str]:
    env, args = split_env(adapt(cmd.text))
    if not env:
        result = CliRunner().invoke(main, args)
        return result.exit_code, result.output + (f"\n{result.exception!r}" if result.exception else "")
    # An environment prefix (the TensorRT contract doubles) changes imports: a fresh process.
    full = {**os.environ, "XDG_CACHE_HOME": str(cache),
            **{k: str(REPO / v) if k == "PYTHONPATH" else v for k, v in env.items()}}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "fcn_deploy", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def run_in_order(commands: list[Command], work: Path, cache: Path) -> list[str]:
    """Run `commands` in `work` (skips as SKIP says); the failures: non-zero exits, earlier outputs changed."""
    made: dict[str, Command] = {}
    failures, skipped, ran = [], [], []
    started_all, cpu_all = time.perf_counter(), cpu_s()
    for cmd in commands:
        skip = cmd.skip()
        if skip is not None and skip[1]():
            skipped.append(f"{cmd}: {skip[0]}")
            continue
        before, started, cpu = snapshot(work), time.perf_counter(), cpu_s()
        code, output = run(cmd, work, cache)
        after = snapshot(work)
        ran.append(f"{time.perf_counter() - started:6.1f} s ({cpu_s() - cpu:5.1f} s CPU)  {adapt(cmd.text)}")
        if code != 0:
            failures.append(f"{cmd} (run as `{adapt(cmd.text)}`) exited {code}:\n{output[-3000:]}")
        for path, stamp in before.items():
            if path in made and after.get(path) != stamp:
                failures.append(f"{cmd} {'replaced' if path in after else 'removed'} {path}, made by {made[path]}")
        made.update({p: cmd for p in after if p not in before})
    total = f"{len(ran)} commands in {time.perf_counter() - started_all:.1f} s ({cpu_s() - cpu_all:.1f} s CPU)"
    print("\n".join(["ran:", *ran, total, "skipped:", *skipped]))
    return failures


@pytest.fixture
def work(tmp_path, monkeypatch) -> tuple[Path, Path]:
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    make_fixtures(work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr("fcn_deploy.runtime.openvino_backend.CACHE_ROOT", cache / "fcn-deploy" / "openvino")
    return work, cache


def test_the_runner_catches_a_failing_command_and_a_replaced_output(work):
    export = "fcn-deploy export --variant fcn8s --width 0.0625 --num-classes 3 --padding same --no-simplify -o m.onnx"
    failures = run_in_order([Command(1, export), Command(2, "fcn-deploy evaluate missing.onnx"), Command(3, export)],
                            *work)  # fmt: skip
    assert len(failures) == 2, failures
    assert "`fcn-deploy evaluate missing.onnx`" in failures[0] and "exited 1" in failures[0]
    assert failures[1].startswith("README.md:3 ") and "replaced m.onnx, made by README.md:1 " in failures[1]


@pytest.mark.slow
def test_every_readme_command_runs_in_order_and_replaces_nothing(work):
    failures = run_in_order(COMMANDS, *work)
    assert not failures, "\n\n".join(failures)
