"""Reliability suite (issue 14), kills and signals: what a killed or interrupted command leaves behind.

* SIGKILL `train` (between its log line and its checkpoint) and `report` the moment their temp file appears, and
  `quantize` / `build-engine` (their `fcn-WHAT.PID.*` scratch folder in the system temp dir) inside the slow fsync
  of a file written within the scratch block: the destination is absent or complete, and the next run sweeps what
  the dead run left (train --resume also keeps every epoch's log line).
* SIGINT / SIGTERM while a temp file exists: removed by the interrupted run itself, one `Error:` line, exit
  128 + the signal (130, 143); a second Ctrl-C while `infer --output v.mp4` finalises the video exits 130 too.

The children run the real CLI on a slow disk (each fsync sleeps) so that the signal lands while a temp exists;
nothing else about the command changes. RELIABILITY_TALLY=FILE appends one JSON line per case (as the matrix does):
exit code, traceback, files left behind, and whether the case was clean.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_artifacts import grey_video, tiny_fcn8s
from trt_double import DOUBLES, use_double

from fcn_deploy.cli import main
from fcn_deploy.training.checkpoint import load_checkpoint

cv2 = pytest.importorskip("cv2")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
HW = 32
# The child: an fsync of a file whose name holds FSYNC_MATCH takes FSYNC_S seconds (a slow disk where it matters,
# full speed elsewhere); MARK, when set, gets a file MARK.frame after the video's first frame and MARK.closing when
# the video starts finalising (for the second Ctrl-C).
CHILD = """
import os, signal, sys, time
# Ctrl-C's handler, as a command started from a terminal has it: when pytest itself runs as a background job of a
# non-interactive shell, its children inherit SIGINT ignored (POSIX), which Python and the CLI keep.
signal.signal(signal.SIGINT, signal.default_int_handler)
real, match, pause = os.fsync, os.environ["FSYNC_MATCH"], float(os.environ["FSYNC_S"])
def fsync(fd):
    if match in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):
        time.sleep(pause)
    return real(fd)
os.fsync = fsync
mark = os.environ.get("MARK")
if mark:
    from fcn_deploy.runtime import sinks
    write, close = sinks.VideoSink.write, sinks.VideoSink.close
    def _write(self, *a):
        write(self, *a)
        open(mark + ".frame", "a").close()
    def _close(self):
        open(mark + ".closing", "a").close()
        close(self)
    sinks.VideoSink.write, sinks.VideoSink.close = _write, _close
from fcn_deploy.cli import main
sys.exit(main())
"""


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> Path:
    """m.onnx, imgs/ (3 images) and a 60-frame v.mp4, built once."""
    b = tmp_path_factory.mktemp("kill")
    tiny_fcn8s(b, HW)
    rng = np.random.default_rng(0)
    (b / "imgs").mkdir()
    for i in range(3):
        cv2.imwrite(str(b / "imgs" / f"i{i}.png"), (rng.random((HW, HW, 3)) * 255).astype(np.uint8))
    grey_video(b / "v.mp4", HW, frames=60, step=4)
    return b


def _start(args: list[str], tmpdir: Path, slow: str, fsync_s: float = 1.0, mark: Path | None = None,
           path: tuple[Path, ...] = ()) -> subprocess.Popen:  # fmt: skip
    """The CLI in a child process whose fsyncs of `.SLOW.` temp files take `fsync_s` (`path`: put first on
    PYTHONPATH, e.g. the TensorRT doubles)."""
    pythonpath = os.pathsep.join([*map(str, path), str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", FSYNC_S=str(fsync_s), FSYNC_MATCH=f".{slow}.", TMPDIR=str(tmpdir),
               PYTHONPATH=pythonpath)  # fmt: skip
    env.pop("MARK", None)
    if mark is not None:
        env["MARK"] = str(mark)
    tmpdir.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_for(proc: subprocess.Popen, found: Callable[[], list[Path]], what: str, timeout: float = 120) -> list[Path]:
    """Poll until `found()` is non-empty (returns it) while the child runs; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = found()
        if hits:
            return hits
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the command finished (rc {proc.returncode}) before {what}:\n{err[-2000:]}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"no {what} within {timeout} s")
    raise AssertionError  # unreachable


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def _temps(folder: Path, name: str) -> list[Path]:
    return list(folder.glob(f".{name}.*.tmp*"))


def tally(case: str, exit_code: int | None, traceback: bool, left: list[Path], clean: bool) -> None:
    if os.environ.get("RELIABILITY_TALLY"):
        with open(os.environ["RELIABILITY_TALLY"], "a") as f:
            f.write(json.dumps({"case": case, "exit_code": exit_code, "traceback": traceback,
                                "left_behind": [str(p) for p in left], "clean": clean}) + "\n")  # fmt: skip


# ----------------------------------------------------------------------------------------------------- SIGKILL
TRAIN = ["train", "--dataset", "synthetic", "--epochs", "2", "--width", "0.0625", "--synthetic-size", "32x32",
         "--synthetic-length", "8", "--batch-size", "4", "--no-progress", "--threads", "1"]  # fmt: skip


@pytest.mark.parametrize("at", ["log.jsonl", "last.pt"])
def test_sigkill_train_in_epoch_2_keeps_every_log_line_and_resume_sweeps(at, tmp_path) -> None:
    """Killed at the temp of log.jsonl or last.pt in epoch 2 (epoch 1's file exists): last.pt is whole, and
    --resume ends with one log line per epoch (a kill after publishing last.pt but before its log line used to
    lose that epoch's line forever: last.pt now holds the history and --resume restores it)."""
    out = tmp_path / "run"
    argv = [*TRAIN, "--output", str(out)]
    proc = _start(argv, tmp_path / "tmp", at)
    _wait_for(proc, lambda: _temps(out, at) if (out / at).exists() else [], f"a temp of {at} in epoch 2")
    _kill(proc)
    assert _temps(out, at), "the killed run's temp should be there for the next run to sweep"
    assert load_checkpoint(out / "last.pt")["epoch"] >= 1  # whole: its integrity record matches
    lines_before = (out / "log.jsonl").read_text().splitlines() if (out / "log.jsonl").exists() else []
    r = CliRunner().invoke(main, [*argv, "--resume"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    left = list(out.glob(".*.tmp*"))
    tally(f"kill-train-{at}", r.exit_code, r.exception is not None and not isinstance(r.exception, SystemExit),
          left, r.exit_code == 0 and not left and [e["epoch"] for e in log] == [1, 2])  # fmt: skip
    assert r.exit_code == 0, r.output[-2000:]
    assert [e["epoch"] for e in log] == [1, 2], "an epoch's log line was lost"
    assert lines_before[:1] == (out / "log.jsonl").read_text().splitlines()[:1]  # epoch 1's line kept as written
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    assert not list(out.glob(".*.tmp*")), "the resumed run did not sweep the dead run's temps"


def test_sigkill_report_at_its_markdown_temp(art, tmp_path) -> None:
    out = tmp_path / "rep"
    argv = ["report", "--onnx", str(art / "m.onnx"), "--dataset", "synthetic", "--precisions", "fp32",
            "--backends", "onnxruntime", "--max-images", "2", "--latency-s", "0.1", "--sizes", "32x32",
            "--output", str(out)]  # fmt: skip
    proc = _start(argv, tmp_path / "tmp", "report.md")
    _wait_for(proc, lambda: _temps(out, "report.md"), "a temp of report.md")
    _kill(proc)
    assert not (out / "report.md").exists(), "a killed run published its report"
    assert json.loads((out / "report.json").read_text())["rows"], "report.json, written before, must be whole"
    assert _temps(out, "report.md")
    r = CliRunner().invoke(main, argv)
    left = list(out.rglob(".*.tmp*"))
    tally("kill-report", r.exit_code, False, left, r.exit_code == 0 and not left)
    assert r.exit_code == 0, r.output[-2000:]
    assert (out / "report.md").exists()
    assert not list(out.rglob(".*.tmp*")), "the next report did not sweep the dead run's temp"


def _scratch(root: Path, what: str = "quantize") -> list[Path]:
    return [p for p in root.glob(f"fcn-{what}.*") if p.is_dir()]


# ONNX Runtime's telemetry writes a session file `.ses` into $TMPDIR when it loads (also on a normal run, and
# kept there): ORT's, not ours, so it is not counted as left behind.
ORT_SESSION_FILE = ".ses"


def _left(tmpdir: Path) -> list[Path]:
    return sorted(p for p in tmpdir.iterdir() if p.name != ORT_SESSION_FILE)


QUANTIZE = ["quantize", "--int8", "--num-images", "2", "--eval-images", "1", "--method", "minmax"]


def test_sigkill_quantize_scratch_folder_is_swept_by_the_next_run(art, tmp_path, monkeypatch) -> None:
    """The scratch folder in the system temp dir names its PID; the next quantize removes a dead run's, and its
    own on a normal exit. The kill lands at one known point: the child is inside the (slow) fsync of the cache's
    temp file, i.e. inside the scratch block, after ORT's pre-processing removed its own `pre.quant.*` folder
    (killing at the moment the scratch folder appeared landed wherever the child had got to by the time this
    process looked: under load that could be inside ORT's pre-processing, whose folder then stayed)."""
    tmpdir = tmp_path / "tmp"
    argv = [*QUANTIZE, str(art / "m.onnx"), "--calib-data", str(art / "imgs"), "--cache", str(tmp_path / "c.json"),
            "-o", str(tmp_path / "q.onnx")]  # fmt: skip
    proc = _start(argv, tmpdir, "c.json", fsync_s=60.0)  # the cache is written while the scratch folder exists
    _wait_for(proc, lambda: _temps(tmp_path, "c.json"), "the cache's temp file")
    (left,) = _scratch(tmpdir)
    _kill(proc)
    assert left.is_dir() and any(left.iterdir()), "the killed run's scratch folder (with its files) should be there"
    monkeypatch.setattr("tempfile.tempdir", str(tmpdir))
    r = CliRunner().invoke(main, argv)
    after = _left(tmpdir)
    tally("kill-quantize-scratch", r.exit_code, False, after, r.exit_code == 0 and not after)
    assert f".{proc.pid}." in left.name, left.name
    assert r.exit_code == 0, r.output[-2000:]
    assert not after, f"left in the temp dir: {[p.name for p in after]}"


def test_sigkill_build_engine_scratch_folder_is_swept_by_the_next_run(art, tmp_path, monkeypatch) -> None:
    """build-engine (on the TensorRT contract double) keeps the --fp16 lowered ONNX in `fcn-engine.PID.*` in the
    system temp dir; killed while writing the plan, that folder stays, and the next build-engine removes it and
    leaves nothing there itself."""
    tmpdir, engine = tmp_path / "tmp", tmp_path / "m.engine"
    argv = ["build-engine", str(art / "m.onnx"), "--fp16", "--calib-data", str(art / "imgs"), "--num-images", "3",
            "--output", str(engine)]  # fmt: skip
    proc = _start(argv, tmpdir, engine.name, fsync_s=60.0, path=(DOUBLES,))  # the plan is written inside the block
    _wait_for(proc, lambda: _temps(tmp_path, engine.name), "the plan's temp file")
    scratch = _scratch(tmpdir, "engine")
    _kill(proc)
    assert [p.name.startswith(f"fcn-engine.{proc.pid}.") for p in scratch] == [True], sorted(tmpdir.iterdir())
    assert any(scratch[0].glob("*.onnx")), "the lowered ONNX lives in the scratch folder"
    assert not engine.exists()
    use_double(monkeypatch)
    monkeypatch.setattr("tempfile.tempdir", str(tmpdir))
    r = CliRunner().invoke(main, argv)
    after = _left(tmpdir)
    tally("kill-build-engine-scratch", r.exit_code, False, after, r.exit_code == 0 and not after)
    assert r.exit_code == 0, r.output[-2000:]
    assert engine.is_file() and not _temps(tmp_path, engine.name)
    assert not after, f"left in the temp dir: {[p.name for p in after]}"


# ---------------------------------------------------------------------------------------------- SIGINT/SIGTERM
def _one_error_line(stderr: str) -> list[str]:
    assert "Traceback" not in stderr and "Aborted!" not in stderr, stderr[-2000:]
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_removes_the_runs_own_temps_and_exits_128_plus_n(sig, art, tmp_path) -> None:
    """quantize --cache, signalled while the cache's temp file exists: no temp beside it, no scratch folder, no
    cache, exit 130 / 143 with one line (SIGTERM used to kill on the spot, SIGINT printed click's 'Aborted!')."""
    tmpdir, cache = tmp_path / "tmp", tmp_path / "c.json"
    argv = [*QUANTIZE, str(art / "m.onnx"), "--calib-data", str(art / "imgs"), "--cache", str(cache),
            "-o", str(tmp_path / "q.onnx")]  # fmt: skip
    proc = _start(argv, tmpdir, "c.json", fsync_s=2.0)
    _wait_for(proc, lambda: _temps(tmp_path, "c.json"), "the cache's temp file")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    left = [*tmp_path.glob(".*.tmp*"), *_scratch(tmpdir)]
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    tally(f"signal-quantize-{signal.Signals(sig).name}", proc.returncode, "Traceback" in err, left,
          proc.returncode == 128 + sig and len(lines) == 1 and not left)  # fmt: skip
    assert proc.returncode == 128 + sig, (proc.returncode, err[-2000:])
    errors = _one_error_line(err)
    assert len(errors) == 1 and signal.Signals(sig).name in errors[0], err[-2000:]
    assert not cache.exists() and not (tmp_path / "q.onnx").exists()
    assert not list(tmp_path.glob(".*.tmp*")), "the interrupted run left its temp file"
    assert not _scratch(tmpdir), "the interrupted run left its scratch folder"


def test_second_ctrl_c_while_the_video_finalises_exits_130(art, tmp_path) -> None:
    """First Ctrl-C stops the run after some frames; the second lands while the video is checked and published
    (slow fsync): exit 130 with one line, not click's 'Aborted!' and exit 1; no temp left; no half video."""
    dest, mark = tmp_path / "o.mp4", tmp_path / "mark"
    argv = ["infer", str(art / "m.onnx"), "--source", str(art / "v.mp4"), "--output", str(dest), "--headless"]
    proc = _start(argv, tmp_path / "tmp", dest.name, fsync_s=3.0, mark=mark)
    _wait_for(proc, lambda: [p for p in [Path(f"{mark}.frame")] if p.exists()], "the first video frame")
    proc.send_signal(signal.SIGINT)
    _wait_for(proc, lambda: [p for p in [Path(f"{mark}.closing")] if p.exists()], "the video finalising")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    left = _temps(tmp_path, dest.name)
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    tally("signal-infer-second-ctrl-c", proc.returncode, "Traceback" in err, left,
          proc.returncode == 130 and len(lines) == 1 and not left)  # fmt: skip
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert len(_one_error_line(err)) == 1, err[-2000:]
    assert not _temps(tmp_path, dest.name), "the interrupted run left the video's temp file"
    if dest.exists():  # published just before the second Ctrl-C: then it must be whole
        cap = cv2.VideoCapture(str(dest))
        assert cap.isOpened() and cap.read()[0]
        cap.release()
