"""Reliability suite (issue 14): nothing lost, nothing silent.

* A table-driven bad-input matrix over every command: wrong kinds of files, empty/truncated/corrupt artifacts,
  damaged weights (integrity records), input/output collisions (symlinks, relative paths, folders), full
  destinations (a small real tmpfs where the machine allows mounting one, else a writer whose fsync fails with
  ENOSPC), bad sizes and numbers, encodings. Each case must exit non-zero with exactly one `Error:` line, no
  traceback, no file at the destination, every input byte-identical and no temp file left.
* Kill tests (slow): SIGKILL `export`, `quantize --cache` and `infer --output` the moment their temp file
  appears; the destination stays absent and the next run of the command sweeps the dead run's temp.
* Seeded fuzz (slow): 50 byte flips/truncations each of an ONNX and a checkpoint through `profile`: never a
  traceback, never a hang.

RELIABILITY_TALLY=FILE appends one JSON line per matrix case (used for the before/after totals in issue 14).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny_artifacts import grey_video, tiny_fcn8s

from fcn_deploy.cli import main

cv2 = pytest.importorskip("cv2")
onnx = pytest.importorskip("onnx")

REPO = Path(__file__).resolve().parents[1]
HW = 32


# ----------------------------------------------------------------------------------------------- artifacts
def _png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), (rng.random((HW, HW, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Good artifacts (m.onnx, ck.pt, a.png, imgs/, v.mp4) and bad ones, built once; cases copy what they use."""
    b = tmp_path_factory.mktemp("rel")
    model = tiny_fcn8s(b, HW, "--min-shape", "16x16", "--max-shape", "512x512")
    _png(b / "a.png", 0)
    (b / "imgs").mkdir()
    for i in range(2):
        _png(b / "imgs" / f"i{i}.png", i + 1)
    grey_video(b / "v.mp4", HW, frames=6, step=40)

    good_onnx, good_ck = (b / "m.onnx").read_bytes(), (b / "ck.pt").read_bytes()
    bad = b / "bad"
    bad.mkdir()
    for name, data in {"empty": b"", "trunc": None, "text": b"hello, not a model\n", "png": (b / "a.png").read_bytes()}.items():
        (bad / f"{name}.onnx").write_bytes(good_onnx[: len(good_onnx) // 2] if data is None else data)
        (bad / f"{name}.pt").write_bytes(good_ck[: len(good_ck) // 2] if data is None else data)
    (bad / "ckpt.onnx").write_bytes(good_ck)
    (bad / "onnx.pt").write_bytes(good_onnx)
    (bad / "dir.onnx").mkdir()
    # damaged weights: flip a byte inside the largest initializer / tensor payload
    m = onnx.load(str(b / "m.onnx"))
    raw = max(m.graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    at = good_onnx.find(bytes(raw[:64])) + len(raw) // 2
    (bad / "flip.onnx").write_bytes(good_onnx[:at] + bytes([good_onnx[at] ^ 0x10]) + good_onnx[at + 1 :])
    big = max(model.state_dict().values(), key=lambda t: t.numel()).numpy().tobytes()
    at = good_ck.find(big[:64]) + len(big) // 2
    (bad / "flip.pt").write_bytes(good_ck[:at] + bytes([good_ck[at] ^ 0x10]) + good_ck[at + 1 :])
    # model cards that pass onnx.checker but are damaged
    for name, value in {"badcard": "{not json", "typecard": json.dumps({"num_classes": "x"})}.items():
        m2 = onnx.load(str(b / "m.onnx"))
        for p in m2.metadata_props:
            if p.key == "fcn_deploy.model_card":
                p.value = value
        onnx.save(m2, str(bad / f"{name}.onnx"))
    # checkpoints: ours without model_config, not ours, an unsafe pickle
    ck = torch.load(b / "ck.pt", weights_only=True)
    torch.save({k: v for k, v in ck.items() if k != "model_config"}, bad / "noconfig.pt")
    torch.save({"a": torch.zeros(1)}, bad / "notours.pt")

    class Evil:
        def __reduce__(self):
            return (open, (str(b / "SENTINEL"), "w"))

    torch.save({"x": Evil()}, bad / "evil.pt")
    # folders and encodings
    (bad / "emptyimgs").mkdir()
    (bad / "corruptimgs").mkdir()
    (bad / "corruptimgs" / "x.png").write_bytes(b"\x89PNG garbage")
    (bad / "v.mp4").write_bytes(b"not a video at all")
    latin = bad / "latin1"
    (latin / "images").mkdir(parents=True)
    (latin / "masks").mkdir()
    for i in range(2):
        _png(latin / "images" / f"i{i}.png", i)
        cv2.imwrite(str(latin / "masks" / f"i{i}.png"), np.zeros((HW, HW), np.uint8))
    (latin / "classes.txt").write_bytes("fond\nchâteau\nroute\n".encode("latin-1"))
    (bad / "cache_strkey.json").write_text(json.dumps({"format": "fcn-deploy.calibration-cache", "version": 1,
                                                       "key": "abc", "ranges": {}}))  # fmt: skip
    return b


# ------------------------------------------------------------------------------------------- full destination
@pytest.fixture(scope="module")
def full_dir(tmp_path_factory):
    """A folder where writes fail with ENOSPC: a filled 256 KiB tmpfs if this machine lets us mount one,
    else a folder whose files fail fsync with ENOSPC (what a full disk does to buffered writes)."""
    d = tmp_path_factory.mktemp("full")
    mounted = False
    if sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("mount"):
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)],
                                 capture_output=True).returncode == 0  # fmt: skip
    try:
        if mounted:
            (d / "out").mkdir()
            fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT)
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
            os.close(fd)
        yield d, mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.fixture
def disk_full(full_dir, monkeypatch):
    d, mounted = full_dir
    if not mounted:
        (d / "out").mkdir(exist_ok=True)
        real_fsync = os.fsync

        def fsync(fd):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}").startswith(str(d)):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    return d


# ----------------------------------------------------------------------------------------------- the matrix
# (id, argv template, destination(s) that must not exist afterwards, exit codes allowed)
# {onnx} {ck} {img} {imgs} {vid}: copies in the case's folder {t}; {bad}: the shared bad files; {full}: ENOSPC.
E = (1,)
EU = (1, 2)  # one-line refusal either as FcnDeployError (1) or a click usage error (2)
CASES = [
    # model-info: sizes and numbers
    ("info-huge-size", "model-info --input-size 100000x100000 --width 0.0625", None, E),
    ("info-bad-size", "model-info --input-size abc", None, EU),
    ("info-zero-size", "model-info --input-size 0x0", None, EU),
    ("info-width-0", "model-info --width 0", None, EU),
    ("info-width-nan", "model-info --width nan", None, EU),
    ("info-classes-0", "model-info --num-classes 0", None, EU),
    # export: bad checkpoints (destination {t}/o.onnx must not appear)
    *[(f"export-ck-{n}", f"export --checkpoint {{bad}}/{n}.pt -o {{t}}/o.onnx", "o.onnx", E)
      for n in ("empty", "trunc", "text", "png", "onnx", "flip", "noconfig", "notours", "evil")],
    ("export-ck-missing", "export --checkpoint {t}/nope.pt -o {t}/o.onnx", "o.onnx", EU),
    ("export-collide-ck", "export --checkpoint {ck} -o {ck}", None, E),
    ("export-collide-ck-relative", "export --checkpoint {ck} -o {t}/./sub/../ck.pt", None, E),
    ("export-collide-ck-symlink", "export --checkpoint {ck} -o {t}/link.pt", None, E),
    ("export-output-dir", "export --checkpoint {ck} -o {imgs}", None, E),
    ("export-opset-3", "export --width 0.0625 --opset 3 -o {t}/o.onnx", "o.onnx", EU),
    ("export-static-bad", "export --width 0.0625 --static abc -o {t}/o.onnx", "o.onnx", EU),
    ("export-width-0", "export --width 0 -o {t}/o.onnx", "o.onnx", EU),
    ("export-check-size-0", "export --width 0.0625 --check-sizes 0x0 -o {t}/o.onnx", "o.onnx", EU),
    ("export-full-disk", "export --checkpoint {ck} --no-simplify --check-sizes 32x32 -o {full}/out/o.onnx",
     "{full}/out/o.onnx", E),
    # quantize: bad models, wrong kinds of calibration data, collisions
    *[(f"quantize-onnx-{n}", f"quantize {{bad}}/{n}.onnx --int8 --calib-data {{imgs}} -o {{t}}/q.onnx", "q.onnx", E)
      for n in ("empty", "trunc", "text", "png", "ckpt", "flip", "badcard", "typecard", "dir")],
    ("quantize-checkpoint", "quantize {ck} --int8 --calib-data {imgs} -o {t}/q.onnx", "q.onnx", E),
    ("quantize-no-precision", "quantize {onnx} --calib-data {imgs} -o {t}/q.onnx", "q.onnx", EU),
    ("quantize-int8-fp16", "quantize {onnx} --int8 --fp16 --calib-data {imgs} -o {t}/q.onnx", "q.onnx", EU),
    ("quantize-calib-file", "quantize {onnx} --int8 --calib-data {vid} -o {t}/q.onnx", "q.onnx", EU),
    ("quantize-calib-missing", "quantize {onnx} --int8 --calib-data {t}/nope -o {t}/q.onnx", "q.onnx", EU),
    ("quantize-calib-empty", "quantize {onnx} --int8 --calib-data {bad}/emptyimgs -o {t}/q.onnx", "q.onnx", E),
    ("quantize-calib-corrupt", "quantize {onnx} --int8 --calib-data {bad}/corruptimgs -o {t}/q.onnx", "q.onnx", E),
    ("quantize-calib-video-bad", "quantize {onnx} --int8 --calib-video {bad}/v.mp4 -o {t}/q.onnx", "q.onnx", E),
    ("quantize-out-json", "quantize {onnx} --int8 --calib-data {imgs} -o {t}/q.json", "q.json", E),
    ("quantize-summary-over-cache", "quantize {onnx} --int8 --calib-data {imgs} --cache {t}/q.json -o {t}/q.onnx",
     "q.onnx", E),
    ("quantize-out-model", "quantize {onnx} --int8 --calib-data {imgs} -o {onnx}", None, E),
    ("quantize-cache-model", "quantize {onnx} --int8 --calib-data {imgs} --cache {onnx} -o {t}/q.onnx", "q.onnx", E),
    ("quantize-out-in-calib", "quantize {onnx} --int8 --calib-data {imgs} -o {imgs}/q.onnx", "imgs/q.onnx", E),
    ("quantize-cache-strkey", "quantize {onnx} --int8 --calib-data {imgs} --num-images 1 --eval-images 0 "
     "--cache {bad}/cache_strkey.json -o {t}/q.onnx", "q.onnx", E),
    ("quantize-mean-2", "quantize {onnx} --int8 --calib-data {imgs} --mean 1,2 -o {t}/q.onnx", "q.onnx", E),
    pytest.param("quantize-full-disk", "quantize {onnx} --int8 --calib-data {imgs} --num-images 1 --eval-images 0 "
                 "--method minmax -o {full}/out/q.onnx", "{full}/out/q.onnx", E, marks=pytest.mark.slow),
    # build-engine: collisions are refused before TensorRT is needed
    ("engine-out-model", "build-engine {onnx} --output {onnx}", None, EU),
    ("engine-out-manifest-model", "build-engine {onnx} --output {t}/m.onnx.engine --keep-onnx {t}/m.onnx.engine.json "
     "--fp16", "m.onnx.engine", EU),
    # train: numbers, encodings, destinations
    ("train-lr-nan", "train --dataset synthetic --lr nan --epochs 1 --width 0.0625 --output {t}/run", "run/last.pt", EU),
    ("train-lr-neg", "train --dataset synthetic --lr -1 --epochs 1 --width 0.0625 --output {t}/run", "run/last.pt", EU),
    ("train-epochs-0", "train --dataset synthetic --epochs 0 --width 0.0625 --output {t}/run", "run/last.pt", EU),
    ("train-width-0", "train --dataset synthetic --epochs 1 --width 0 --output {t}/run", "run/last.pt", EU),
    ("train-crop-bad", "train --dataset synthetic --epochs 1 --width 0.0625 --crop abc --output {t}/run",
     "run/last.pt", EU),
    ("train-latin1-classes", "train --dataset folder --data-root {bad}/latin1 --epochs 1 --width 0.0625 "
     "--output {t}/run", "run/last.pt", E),
    ("train-root-missing", "train --dataset folder --data-root {t}/nope --epochs 1 --width 0.0625 --output {t}/run",
     "run/last.pt", EU),
    ("train-init-flip", "train --dataset synthetic --epochs 1 --width 0.0625 --init-from {bad}/flip.pt "
     "--output {t}/run", "run/last.pt", E),
    ("train-init-text", "train --dataset synthetic --epochs 1 --width 0.0625 --init-from {bad}/text.pt "
     "--output {t}/run", "run/last.pt", E),
    ("train-init-in-output", "train --dataset synthetic --epochs 1 --width 0.0625 --init-from {t}/o/ck.pt "
     "--output {t}/o", None, E),
    ("train-output-in-data-root", "train --dataset folder --data-root {imgs} --epochs 1 --width 0.0625 "
     "--output {imgs}/run", "imgs/run", E),
    ("train-output-is-file", "train --dataset synthetic --epochs 1 --width 0.0625 --output {ck}", None, EU),
    # evaluate: bad models and data
    *[(f"evaluate-{n}", f"evaluate {{bad}}/{n} --dataset synthetic", None, E)
      for n in ("empty.onnx", "trunc.onnx", "flip.onnx", "badcard.onnx", "flip.pt", "noconfig.pt", "evil.pt",
                "text.pt")],
    ("evaluate-latin1", "evaluate {onnx} --dataset folder --data-root {bad}/latin1", None, E),
    ("evaluate-root-missing", "evaluate {onnx} --dataset folder --data-root {t}/nope", None, EU),
    # infer: collisions of inputs and outputs
    ("infer-dir-over-dir", "infer {onnx} --source {imgs} --output {imgs} --headless", None, E),
    ("infer-img-over-img", "infer {onnx} --source {img} --output {img} --headless", None, E),
    ("infer-labels-over-source", "infer {onnx} --source {imgs} --save-labels {imgs} --headless", None, E),
    ("infer-output-is-labels", "infer {onnx} --source {img} --output {t}/o2 --save-labels {t}/o2 --headless", "o2", E),
    ("infer-labels-in-output", "infer {onnx} --source {imgs} --output {t}/o2 --save-labels {t}/o2/l --headless",
     "o2", E),
    ("infer-source-in-output", "infer {onnx} --source {t}/o/a.png --output {t}/o --headless", None, E),
    ("infer-glob-over-dir", "infer {onnx} --source {imgs}/*.png --output {imgs} --headless", None, E),
    ("infer-symlink-over-img", "infer {onnx} --source {img} --output {t}/link.png --headless", None, E),
    ("infer-video-over-model", "infer {onnx} --source {vid} --output {onnx} --headless", None, E),
    ("infer-video-over-video", "infer {onnx} --source {vid} --output {vid} --headless", None, E),
    # infer: bad inputs
    *[(f"infer-model-{n}", f"infer {{bad}}/{n} --source {{img}} --output {{t}}/o.png --headless", "o.png", E)
      for n in ("empty.onnx", "text.onnx", "flip.onnx", "badcard.onnx", "flip.pt")],
    ("infer-model-dir", "infer {bad}/dir.onnx --source {img} --output {t}/o.png --headless", "o.png", EU),
    ("infer-source-missing", "infer {onnx} --source {t}/nope.mp4 --output {t}/o.mp4 --headless", "o.mp4", E),
    ("infer-source-not-video", "infer {onnx} --source {bad}/v.mp4 --output {t}/o.mp4 --headless", "o.mp4", E),
    ("infer-size-bad", "infer {onnx} --source {img} --input-size abc --output {t}/o.png --headless", "o.png", EU),
    ("infer-size-huge", "infer {onnx} --source {img} --input-size 100000x100000 --output {t}/o.png --headless",
     "o.png", E),
    ("infer-output-type", "infer {onnx} --source {vid} --output {t}/o.xyz --headless", "o.xyz", E),
    ("infer-heatmap-class", "infer {onnx} --source {img} --visualize heatmap:nope --output {t}/o.png --headless",
     "o.png", E),
    ("infer-video-full-disk", "infer {onnx} --source {vid} --output {full}/out/o.mp4 --headless",
     "{full}/out/o.mp4", E),
    ("infer-image-full-disk", "infer {onnx} --source {img} --output {full}/out/o.png --headless",
     "{full}/out/o.png", E),
    # profile
    ("profile-json-over-model", "profile {onnx} --json {onnx} --iterations 2 --warmup-s 0", None, E),
    ("profile-json-over-model-symlink", "profile {onnx} --json {t}/link.onnx --iterations 2 --warmup-s 0", None, E),
    ("profile-shape-huge", "profile {onnx} --shape 100000x100000 --iterations 2 --warmup-s 0", None, E),
    ("profile-shape-bad", "profile {onnx} --shape abc --iterations 2", None, EU),
    ("profile-batch-0", "profile {onnx} --batch 0 --iterations 2", None, EU),
    ("profile-iterations-0", "profile {onnx} --iterations 0", None, EU),
    ("profile-iter-and-duration", "profile {onnx} --iterations 2 --duration 1", None, EU),
    *[(f"profile-model-{n}", f"profile {{bad}}/{n} --iterations 2 --warmup-s 0 --json {{t}}/p.json", "p.json", E)
      for n in ("empty.onnx", "trunc.onnx", "png.onnx", "flip.onnx", "typecard.onnx", "flip.pt", "empty.pt")],
    ("profile-model-dir", "profile {bad}/dir.onnx --iterations 2 --json {t}/p.json", "p.json", EU),
    ("profile-json-full-disk", "profile {onnx} --iterations 2 --warmup-s 0 --shape 32x32 --json {full}/out/p.json",
     "{full}/out/p.json", E),
    # report
    ("report-onnx-flip", "report --onnx {bad}/flip.onnx --dataset synthetic --output {t}/r", "r/report.md", E),
    ("report-ck-flip", "report --checkpoint {bad}/flip.pt --dataset synthetic --output {t}/r", "r/report.md", E),
    ("report-output-is-model", "report --onnx {onnx} --dataset synthetic --output {onnx}", None, E),
    ("report-sizes-bad", "report --onnx {onnx} --dataset synthetic --sizes abc --output {t}/r", "r/report.md", EU),
    ("report-precisions-bad", "report --onnx {onnx} --dataset synthetic --precisions fp7 --output {t}/r",
     "r/report.md", EU),
    # demo
    ("demo-output-file", "demo --output {ck}", None, EU),
]


def _id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


def _digest_tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _prepare(base: Path, t: Path) -> dict[str, str]:
    for name in ("m.onnx", "ck.pt", "a.png", "v.mp4"):
        shutil.copy(base / name, t / name)
    shutil.copytree(base / "imgs", t / "imgs")
    (t / "link.pt").symlink_to(t / "ck.pt")
    (t / "link.png").symlink_to(t / "a.png")
    (t / "link.onnx").symlink_to(t / "m.onnx")
    (t / "sub").mkdir()
    (t / "o").mkdir()
    shutil.copy(base / "a.png", t / "o" / "a.png")
    shutil.copy(base / "ck.pt", t / "o" / "ck.pt")
    return {"onnx": str(t / "m.onnx"), "ck": str(t / "ck.pt"), "img": str(t / "a.png"), "imgs": str(t / "imgs"),
            "vid": str(t / "v.mp4"), "t": str(t), "bad": str(base / "bad")}  # fmt: skip


def classify(result, t: Path, before: dict[str, str], dests: list[Path], codes: tuple[int, ...], full: Path) -> dict:
    """What a case did: clean (one Error line, allowed code, nothing written, inputs intact) or what went wrong."""
    text = result.output + (result.stderr if result.stderr_bytes is not None and result.stderr not in result.output
                            else "")  # fmt: skip
    traceback = result.exception is not None and not isinstance(result.exception, SystemExit)
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    left = [str(d) for d in dests if d.exists()]
    temps = [str(p) for root in (t, full) for p in root.rglob(".*.tmp*")]
    after = _digest_tree(t)
    changed = [k for k, v in before.items() if after.get(k) != v]
    return {
        "exit_code": result.exit_code,
        "traceback": traceback,
        "exit_0": result.exit_code == 0,
        "code_ok": result.exit_code in codes,
        "one_error_line": len(errors) == 1,
        "left_behind": left + temps,
        "inputs_changed": changed,
        "clean": (not traceback and result.exit_code in codes and len(errors) == 1 and not left and not temps
                  and not changed),
        "first_error": errors[0][:300] if errors else (repr(result.exception)[:300] if traceback else text[-300:]),
    }


@pytest.mark.parametrize("case_id,argv,dest,codes", CASES, ids=[_id(c) for c in CASES])
def test_bad_input_matrix(case_id, argv, dest, codes, base, tmp_path, request) -> None:
    t = tmp_path / "case"
    t.mkdir()
    values = _prepare(base, t)
    full = None
    if "{full}" in argv or (dest and "{full}" in dest):
        full = request.getfixturevalue("disk_full")
        values["full"] = str(full)
    args = [a.format(**values) for a in argv.split()]
    dests = [Path(dest.format(**values)) if "{" in dest else t / dest] if dest else []
    before = _digest_tree(t)
    result = CliRunner().invoke(main, args)
    outcome = classify(result, t, before, dests, codes, full or t)
    if os.environ.get("RELIABILITY_TALLY"):
        with open(os.environ["RELIABILITY_TALLY"], "a") as f:
            f.write(json.dumps({"case": case_id, **outcome}) + "\n")
    assert not (base / "SENTINEL").exists(), "an unsafe pickle ran"
    assert outcome["clean"], f"{case_id}: {json.dumps(outcome, indent=1)}\n--- output ---\n{result.output[-2000:]}"


def test_matrix_is_large_enough() -> None:
    argvs = [(c.values if hasattr(c, "values") else c)[1] for c in CASES]
    assert len(CASES) >= 80 and len({_id(c) for c in CASES}) == len(CASES)
    assert {a.split()[0] for a in argvs} >= {"model-info", "export", "quantize", "build-engine", "train",
                                                 "evaluate", "infer", "profile", "report", "demo"}  # fmt: skip


# ----------------------------------------------------------------------------------------- section 5 messages
def _section5_files(base: Path, t: Path) -> None:
    """A model without Conv (with a card-less --mean/--std), a checkpoint and an ONNX whose stored width is 9."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, HW, HW])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, HW, HW])
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["out"])], "relu", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(t / "noconv.onnx"))
    ck = torch.load(base / "ck.pt", weights_only=True)
    ck["model_config"]["width"] = 9.0  # the weights' integrity record still matches: only the config is wrong
    torch.save(ck, t / "w9.pt")
    m = onnx.load(str(base / "m.onnx"))
    for p in m.metadata_props:
        if p.key == "fcn_deploy.model_card":
            p.value = json.dumps({**json.loads(p.value), "width": 9.0})
    onnx.save(m, str(t / "w9.onnx"))


# (id, argv, what the one Error line must say, what it must not say)
MESSAGES = [
    ("no-conv-no-exclude", "quantize {t}/noconv.onnx --int8 --calib-data {imgs} --mean 0.5,0.5,0.5 --std 0.2,0.2,0.2 "
     "-o {t}/q.onnx", r"noconv\.onnx: has no Conv/ConvTranspose", "--exclude"),
    ("calib-data-video", "quantize {onnx} --int8 --calib-data {vid} -o {t}/q.onnx", r"v\.mp4: .*--calib-video", None),
    ("calib-data-file", "quantize {onnx} --int8 --calib-data {ck} -o {t}/q.onnx", r"ck\.pt: is a file, not a folder",
     "does not exist"),
    ("calib-none-decoded", "quantize {onnx} --int8 --calib-data {bad}/corruptimgs -o {t}/q.onnx",
     r"none of the 1 image file\(s\) could be decoded .*the first: .*x\.png", None),
    ("ckpt-width", "export --checkpoint {t}/w9.pt -o {t}/o.onnx", r"w9\.pt: .*invalid width", "--width"),
    ("onnx-card-width", "profile {t}/w9.onnx --iterations 1 --warmup-s 0", r"w9\.onnx: .*invalid width", "--width"),
    ("profile-shape-over-card", "profile {onnx} --shape 1024x1024 --iterations 1 --warmup-s 0",
     r"--shape 1024x1024 is outside .*512x512", None),
    # with 1 GB available (below): the batch's input is 0.55 GB, the runtime's activations take another 1.3 GB
    ("profile-batch-memory", "profile {onnx} --shape 32x32 --batch 20000 --iterations 1 --warmup-s 0",
     r"needs about 1\.9 GB of memory, more than the 1\.0 GB available", None),
]


@pytest.mark.parametrize("case_id,argv,needle,absent", MESSAGES, ids=[m[0] for m in MESSAGES])
def test_section5_messages_name_the_file_and_the_fix(case_id, argv, needle, absent, base, tmp_path, monkeypatch
                                                     ) -> None:  # fmt: skip
    import re

    monkeypatch.setattr("fcn_deploy.core.memory.available_bytes", lambda: 10**9)  # a 1 GB machine
    t = tmp_path
    values = _prepare(base, t)
    _section5_files(base, t)
    t0 = time.monotonic()
    r = CliRunner().invoke(main, [a.format(**values) for a in argv.split()])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    said = bool(errors) and bool(re.search(needle, errors[0])) and (absent is None or absent not in errors[0])
    if os.environ.get("RELIABILITY_TALLY"):
        with open(os.environ["RELIABILITY_TALLY"], "a") as f:
            f.write(json.dumps({"case": f"message-{case_id}", "exit_code": r.exit_code, "left_behind": [],
                                "traceback": r.exception is not None and not isinstance(r.exception, SystemExit),
                                "clean": r.exit_code != 0 and len(errors) == 1 and said}) + "\n")  # fmt: skip
    assert r.exit_code != 0 and len(errors) == 1, r.output[-2000:]
    assert re.search(needle, errors[0]), errors[0]
    assert absent is None or absent not in errors[0], errors[0]
    assert time.monotonic() - t0 < 30, "refused only after allocating"


# ---------------------------------------------------------------------------------------------- integrity
def test_integrity_records_are_checked_and_old_files_still_load(base, tmp_path) -> None:
    from fcn_deploy.core.errors import FcnDeployError
    from fcn_deploy.core.onnx_io import WEIGHTS_KEY, load_onnx
    from fcn_deploy.training.checkpoint import load_checkpoint

    assert any(p.key == WEIGHTS_KEY for p in load_onnx(base / "m.onnx").metadata_props)
    assert "weights_sha256" in load_checkpoint(base / "ck.pt")
    with pytest.raises(FcnDeployError, match="flip.onnx: the weights do not match"):
        load_onnx(base / "bad" / "flip.onnx")
    with pytest.raises(FcnDeployError, match="flip.pt: the weights do not match"):
        load_checkpoint(base / "bad" / "flip.pt")
    # files written before the record existed: loaded without a check
    m = onnx.load(str(base / "m.onnx"))
    keep = [p for p in m.metadata_props if p.key != WEIGHTS_KEY]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    onnx.save(m, str(tmp_path / "old.onnx"))
    load_onnx(tmp_path / "old.onnx")
    ck = torch.load(base / "ck.pt", weights_only=True)
    del ck["weights_sha256"]
    torch.save(ck, tmp_path / "old.pt")
    assert "weights_sha256" not in load_checkpoint(tmp_path / "old.pt")


def test_collision_rule_resolves_paths(tmp_path) -> None:
    from fcn_deploy.core.errors import FcnDeployError
    from fcn_deploy.core.paths import check_outputs, source_input

    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    os.link(tmp_path / "f", tmp_path / "hard")
    check_outputs({"--in": tmp_path / "f"}, {"--out": tmp_path / "g", "--other": tmp_path / "h"})
    check_outputs({"--in": None}, {"--out": "-", "--b": None})
    for inputs, outputs, needle in [
        ({"--in": tmp_path / "f"}, {"--out": tmp_path / "hard"}, "same path"),
        ({"--in": tmp_path / "d"}, {"--out": tmp_path / "d" / "x.png"}, "inside --in"),
        ({"--in": tmp_path / "d" / "a.png"}, {"--out": tmp_path / "d"}, "--in .* is inside --out"),
        ({}, {"--a": tmp_path / "o", "--b": tmp_path / "o" / "labels"}, "--b .* is inside --a"),
        ({}, {"--a": tmp_path / "o", "--b": f"{tmp_path}/x/../o"}, "same path"),
    ]:
        with pytest.raises(FcnDeployError, match=needle):
            check_outputs(inputs, outputs)
    assert source_input("rtsp://cam/1") is None and source_input("frames/*.png") == "frames"


def test_video_sink_never_publishes_an_unfinished_file(tmp_path) -> None:
    from fcn_deploy.core.errors import FcnDeployError
    from fcn_deploy.runtime import sinks
    from fcn_deploy.runtime.sources.base import Frame

    sink = sinks.VideoSink(tmp_path / "v.mp4", 10.0)
    img = np.zeros((HW, HW, 3), np.uint8)
    frame = Frame(index=0, image=img, timestamp=0.0, name="f0", captured=0.0, capture_ms=0.0)
    for _ in range(3):
        sink.write(frame, img, np.zeros((HW, HW), np.int32))
    sink._writer.release()  # finish the file as OpenCV would, then cut it as a full disk does
    sink._writer = None
    with open(sink.tmp, "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    with pytest.raises(FcnDeployError, match="v.mp4: the video could not be completed"):
        sink.close()
    assert not (tmp_path / "v.mp4").exists() and not list(tmp_path.glob(".*tmp*"))


def test_parity_ignores_argmax_ties() -> None:
    from fcn_deploy.export import validate

    ref = np.zeros((1, 3, 4, 4), np.float32)
    ref[:, 1] = 0.5
    ref[:, 2] = 0.5  # classes 1 and 2 tied everywhere
    got = ref.copy()
    got[:, 2] += 4e-8
    assert (got.argmax(axis=1) != ref.argmax(axis=1)).all()  # ArgMax differs on every pixel...
    assert validate.label_agreement(ref, got.argmax(axis=1), atol=1e-5) == 1.0  # ...but every pixel is a tie
    got2 = ref.copy()
    got2[:, 0, 0, 0] = 1.0  # a real disagreement, not a tie
    assert validate.label_agreement(ref, got2.argmax(axis=1), atol=1e-5) == 15 / 16


# ---------------------------------------------------------------------------------------------- kill tests
# The child sees a slow disk (each fsync takes 1.5 s) so that the kill lands while a temp file exists, even for a
# small file such as a calibration cache; nothing else about the command changes.
SLOW_DISK = ("import os, sys, time; real = os.fsync; os.fsync = lambda fd: (time.sleep(1.5), real(fd))[1]; "
             "from fcn_deploy.cli import main; sys.exit(main())")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", SLOW_DISK, *args]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def _kill_when_temp_appears(argv: list[str], folder: Path, dest_name: str, timeout: float = 120) -> Path:
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            temps = list(folder.glob(f".{dest_name}.*.tmp*"))
            if temps:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                return temps[0]
            if proc.poll() is not None:
                pytest.fail(f"{argv} finished (rc {proc.returncode}) before a temp file of {dest_name} appeared")
            time.sleep(0.005)
        pytest.fail(f"no temp file for {dest_name} within {timeout} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raise AssertionError  # unreachable


@pytest.mark.slow
@pytest.mark.parametrize("what", ["export", "quantize-cache", "infer-video"])
def test_sigkill_at_temp_file_leaves_nothing_and_next_run_sweeps(what, base, tmp_path) -> None:
    t = tmp_path
    values = _prepare(base, t)
    if what == "export":
        dest = t / "o.onnx"
        argv = _cli("export", "--checkpoint", values["ck"], "-o", str(dest), "--no-simplify", "--check-sizes", "32x32")
    elif what == "quantize-cache":
        dest = t / "c.json"
        argv = _cli("quantize", values["onnx"], "--int8", "--calib-data", values["imgs"], "--num-images", "2",
                    "--eval-images", "0", "--method", "minmax", "--cache", str(dest), "-o", str(t / "q.onnx"))  # fmt: skip
    else:
        dest = t / "o.mp4"
        argv = _cli("infer", values["onnx"], "--source", values["vid"], "--output", str(dest), "--headless")
    temp = _kill_when_temp_appears(argv, t, dest.name)
    assert not dest.exists(), "a killed run published its artifact"
    assert temp.exists(), "the killed run's temp file should still be there for the next run to sweep"
    r = CliRunner().invoke(main, argv[3:])  # the next run, in-process (argv[3:]: the command's own arguments)
    assert r.exit_code == 0, r.output[-2000:]
    assert dest.exists()
    assert not list(t.glob(f".{dest.name}.*.tmp*")), "the next run did not sweep the dead run's temp file"


# -------------------------------------------------------------------------------------------------- fuzz
def _mutations(data: bytes, n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 2:
            out.append(data[: rng.randrange(len(data))])
        else:
            d = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
            out.append(bytes(d))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("artifact", ["m.onnx", "ck.pt"])
def test_fuzzed_artifacts_never_traceback_or_hang(artifact, base, tmp_path) -> None:
    data = (base / artifact).read_bytes()
    suffix = Path(artifact).suffix
    outcomes = {"clean_error": 0, "ran": 0}
    for k, blob in enumerate(_mutations(data, 50, seed=14 + len(suffix))):
        path = tmp_path / f"f{k}{suffix}"
        path.write_bytes(blob)
        t0 = time.monotonic()
        r = CliRunner().invoke(main, ["profile", str(path), "--iterations", "1", "--warmup-s", "0",
                                      "--shape", "32x32"])  # fmt: skip
        assert time.monotonic() - t0 < 30, f"mutation {k} of {artifact} hung"
        assert r.exception is None or isinstance(r.exception, SystemExit), (k, repr(r.exception))
        if r.exit_code == 0:
            outcomes["ran"] += 1
        else:
            assert sum(line.startswith("Error:") for line in r.output.splitlines()) == 1, r.output[-500:]
            outcomes["clean_error"] += 1
        path.unlink()
    # Damaged weights are caught by the integrity records: a flip that still runs must be outside the weights.
    assert outcomes["clean_error"] >= 40, outcomes

