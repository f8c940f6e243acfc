"""A real tritonserver (the one nvidia-pytriton bundles) serving an `fcn-deploy package --backend python`
repository on this CPU: class maps over HTTP and gRPC pixel-identical to local ONNX Runtime, pictures through the
ensemble, `infer triton://`, a server killed mid-run, and no orphaned server."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tritonclient.http", reason="tritonclient not installed: pip install '.[serve]'")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (grpcio) not installed: pip install '.[serve]'")

from test_serving import tiny_onnx  # noqa: E402

from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError  # noqa: E402
from fcn_deploy.core.images import read_image  # noqa: E402
from fcn_deploy.core.preprocess import preprocess  # noqa: E402
from fcn_deploy.runtime.ort_backend import OrtBackend  # noqa: E402
from fcn_deploy.serving.client import TritonBackend  # noqa: E402
from fcn_deploy.serving.repository import TritonOptions, package_triton  # noqa: E402
from fcn_deploy.serving.server import TritonServer, find_server, free_port  # noqa: E402

pytestmark = pytest.mark.triton

try:
    find_server()
except MissingDependencyError as e:
    pytest.skip(str(e), allow_module_level=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("triton")
    model = tiny_onnx(tmp / "tiny.onnx", probs=True)
    repo = package_triton([model], tmp / "repo", TritonOptions(backend="python", max_batch_size=4,
                                                               serve_sizes=((48, 64),)))  # fmt: skip
    server = TritonServer(repo, log_file=tmp / "server.log")
    with server:
        local = OrtBackend(model)
        yield server, local, model, tmp
    assert server.process.returncode is not None  # reaped: no orphaned tritonserver
    with pytest.raises(ProcessLookupError):
        os.kill(server.process.pid, 0)


@pytest.mark.parametrize("scheme, port", [("triton", "http_port"), ("triton+grpc", "grpc_port")])
def test_class_maps_equal_local_onnxruntime(served, scheme, port) -> None:
    server, local, _, _ = served
    rng = np.random.default_rng(0)
    with TritonBackend(f"{scheme}://127.0.0.1:{getattr(server, port)}/tiny", timeout=20) as remote:
        assert remote.card == local.card and remote.output_kinds == ("probs",)
        for n, h, w in [(1, 48, 64), (3, 33, 47), (1, 17, 90), (6, 24, 32)]:  # 6 > max_batch_size 4: split
            x = rng.normal(size=(n, 3, h, w)).astype(np.float32)
            got, want = remote.run(x), local.run(x)
            assert got["labels"].shape == (n, h, w)
            np.testing.assert_array_equal(got["labels"], want["labels"])
            np.testing.assert_array_equal(got["probs"], want["probs"])
            assert len(np.unique(want["labels"])) > 1  # a class map worth comparing


def test_concurrent_clients_each_get_their_own_answer(served) -> None:
    """8 clients at once for a few seconds (dynamic batching merges their requests server-side): no failed request,
    and every answer is the local result for that client's own input. Throughput is benchmarks/triton_load.py's."""
    import threading
    import time

    server, local, _, _ = served
    inputs = [np.random.default_rng(10 + k).normal(size=(1, 3, 24, 32)).astype(np.float32) for k in range(8)]
    wants = [local.run(x)["labels"] for x in inputs]
    counts, failures = [0] * 8, []
    stop_at = time.monotonic() + 4.0

    def client(k: int) -> None:
        with TritonBackend(f"triton://{server.http_url}/tiny", timeout=20, retries=0) as remote:
            while time.monotonic() < stop_at:
                try:
                    got = remote.run(inputs[k])["labels"]
                except Exception as e:
                    failures.append(str(e))
                    return
                if not np.array_equal(got, wants[k]):
                    failures.append(f"client {k}: another request's answer")
                    return
                counts[k] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures and all(c >= 1 for c in counts), (failures, counts)
    import tritonclient.http as th

    stats_client = th.InferenceServerClient(server.http_url)
    try:
        [stats] = stats_client.get_inference_statistics("tiny")["model_stats"]
    finally:
        stats_client.close()
    # Requests were merged into shared executions (and split back correctly, as checked above).
    assert stats["inference_count"] > stats["execution_count"], stats


def test_pictures_through_the_ensemble(served) -> None:
    import tritonclient.http as th

    server, local, _, _ = served
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)

    def want(images):
        return local.run(np.concatenate([preprocess(i, local.card.normalization) for i in images]))["labels"]

    client = th.InferenceServerClient(server.http_url)
    try:
        def ask(array):
            inp = th.InferInput("IMAGE", list(array.shape), "UINT8")
            inp.set_data_from_numpy(array)
            return client.infer("tiny_ensemble", [inp]).as_numpy("labels")

        np.testing.assert_array_equal(ask(frames), want(frames))
        for fmt in ("PNG", "JPEG"):
            buf = io.BytesIO()
            Image.fromarray(frames[0]).save(buf, fmt)
            data = np.frombuffer(buf.getvalue(), np.uint8)
            decoded = read_image(io.BytesIO(buf.getvalue()))  # the one decoder, as the server's
            np.testing.assert_array_equal(ask(data[None, None, None]), want(decoded[None]))
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException, match="IMAGE|cannot"):
            ask(np.frombuffer(b"not an image at all", np.uint8)[None, None, None])
    finally:
        client.close()


def test_infer_cli_against_the_server_equals_local(served, tmp_path) -> None:
    from click.testing import CliRunner

    from fcn_deploy.cli import main

    server, _, model, _ = served
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    for i, (h, w) in enumerate([(48, 64), (40, 56)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"{i}.png")
    runner = CliRunner()
    outs = {}
    # The server runs ONNX Runtime: compare with local ONNX Runtime (auto may pick another CPU runtime).
    for tag, target, backend in (("local", str(model), "onnxruntime"),
                                 ("triton", f"triton://{server.http_url}/tiny", "auto")):
        r = runner.invoke(main, ["infer", target, "--backend", backend, "--source", str(images), "--native",
                                 "--headless", "--save-labels", str(tmp_path / tag)])  # fmt: skip
        assert r.exit_code == 0, r.output
        outs[tag] = sorted((tmp_path / tag).iterdir())
    assert [p.name for p in outs["local"]] == [p.name for p in outs["triton"]] and len(outs["local"]) == 2
    for a, b in zip(outs["local"], outs["triton"], strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_server_killed_mid_run_fails_each_request_clearly(served, tmp_path) -> None:
    from click.testing import CliRunner

    from fcn_deploy.cli import main

    _, _, _, tmp = served
    server = TritonServer(tmp / "repo", log_file=tmp_path / "doomed.log")
    with server:
        remote = TritonBackend(f"triton://{server.http_url}/tiny", timeout=5, retries=1, backoff=0.1)
        x = np.zeros((1, 3, 32, 32), np.float32)
        assert remote.run(x)["labels"].shape == (1, 32, 32)
        server.kill()
        for _ in range(2):  # one clear error per request, never a hang
            with pytest.raises(FcnDeployError, match=r"no answer from the Triton server after 2 tries"):
                remote.run(x)
        remote.close()
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
        r = CliRunner().invoke(main, ["infer", f"triton://{server.http_url}/tiny", "--source",
                                      str(tmp_path / "a.png"), "--headless"])  # fmt: skip
        assert r.exit_code != 0 and "no answer from the Triton server" in r.output and "Traceback" not in r.output
    assert server.process.returncode is not None


def test_work_dir_is_a_scratch_folder_of_this_process_removed_by_stop(served, tmp_path, monkeypatch) -> None:
    """The private copy of the backends is `fcn-triton.PID.*` in the system temp dir: starting a server sweeps
    a dead run's, stop() removes this one, and so does a start that fails before the server runs."""
    import subprocess
    import sys

    binary = find_server()
    if binary.backend_dir is None:
        pytest.skip("a tritonserver on PATH uses its own backends: no work dir")
    _, _, _, tmp = served
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (scratch / f"fcn-triton.{dead.pid}.killed" / "backends").mkdir(parents=True)
    server = TritonServer(tmp / "repo")
    with server:
        (workdir,) = scratch.iterdir()  # the dead run's is gone
        assert workdir.name.startswith(f"fcn-triton.{os.getpid()}."), workdir.name
        assert f"--backend-directory={workdir / 'backends'}" in server.process.args
        if binary.stub is not None:
            assert (workdir / "backends" / "python" / "triton_python_backend_stub").is_file()
    assert not list(scratch.iterdir()), "stop() left the work dir"
    (tmp_path / "log").mkdir()
    failed = TritonServer(tmp / "repo", log_file=tmp_path / "log")
    with pytest.raises(IsADirectoryError):  # the log is a folder: fails after the work dir is made
        failed.start()
    assert failed.process is None
    assert not list(scratch.iterdir()), "a failed start left the work dir (while the server object lives)"


def test_bad_urls_are_one_line_errors() -> None:
    from fcn_deploy.chain.backends import open_backend

    with pytest.raises(FcnDeployError, match="triton://HOST:PORT/MODEL"):
        open_backend("triton://127.0.0.1:8000/")
    with pytest.raises(FcnDeployError, match="FP32 only"):
        open_backend("triton://127.0.0.1:8000/m", precision="bf16")
    with pytest.raises(FcnDeployError, match="unknown option 'timout'"):
        open_backend("triton://127.0.0.1:8000/m?timout=3")
    with pytest.raises(FcnDeployError, match="no answer from the Triton server after 1 try "):
        open_backend(f"triton://127.0.0.1:{free_port()}/m?timeout=2&retries=0")  # nothing listens there


def _servers_on(http_port: int) -> list[int]:
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if "tritonserver" in cmd and f"--http-port={http_port}\0" in cmd:
                pids.append(int(p))
    return pids


def test_serve_cli_waits_for_readiness_and_stops_on_sigterm(served) -> None:
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from fcn_deploy.serving.server import free_port

    _, _, _, tmp = served
    repo = (tmp / "repo").resolve()
    http, grpc = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from fcn_deploy.cli import main; main()", "serve", str(repo),
                             "--http-port", str(http), "--grpc-port", str(grpc)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()  # printed only once every model is ready
        assert f"HTTP 127.0.0.1:{http}" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/tiny_ensemble/ready", timeout=5) as r:
            assert r.status == 200
        assert len(_servers_on(http)) >= 1
        proc.send_signal(signal.SIGTERM)  # docker stop / systemd; Ctrl-C is SIGINT -> 130, same path
        assert proc.wait(60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while _servers_on(http) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _servers_on(http)  # no orphaned tritonserver


def test_a_server_whose_parent_is_killed_stops(served) -> None:
    """SIGKILL of the process that started the server (no stop(), no atexit) still stops the server."""
    import signal
    import subprocess
    import sys
    import time

    _, _, _, tmp = served
    http = free_port()
    script = ("import sys, time; from fcn_deploy.serving.server import TritonServer; "
              f"s = TritonServer({str(tmp / 'repo')!r}, http_port={http}).start(); print('ready', flush=True); "
              "time.sleep(600)")  # fmt: skip
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        assert len(_servers_on(http)) == 1
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
    finally:
        if parent.poll() is None:
            parent.kill()
    deadline = time.monotonic() + 30
    while _servers_on(http) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _servers_on(http), "tritonserver outlived the process that started it"


def test_a_model_the_server_cannot_load_is_a_one_line_error(tmp_path) -> None:
    repo = tmp_path / "repo"
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.py").write_text("raise RuntimeError('broken on purpose')\n")
    (repo / "broken" / "config.pbtxt").write_text(
        'name: "broken" backend: "python" max_batch_size: 0 '
        'input [{name: "x" data_type: TYPE_FP32 dims: [1]}] output [{name: "y" data_type: TYPE_FP32 dims: [1]}] '
        'instance_group [{kind: KIND_CPU count: 1}]'
    )
    server = TritonServer(repo, log_file=tmp_path / "log")
    with pytest.raises(FcnDeployError, match="tritonserver exited with code .* while loading"):
        server.start(60)
    assert server.process.returncode is not None and "broken on purpose" in (tmp_path / "log").read_text()
