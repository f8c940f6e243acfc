"""Start a real `tritonserver` for a model repository: the one on PATH, else the one bundled in nvidia-pytriton.

The nvidia-pytriton wheel ships the server binary (`pytriton/tritonserver/bin/tritonserver`), its shared libraries
(`nvidia_pytriton.libs/`), the Python backend and one Python-backend stub per Python version; the stub must sit in
the python backend folder, so the backends are copied to a private temp folder with the stub of this Python.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from fcn_deploy.core.atomic import scratch_dir
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError

SERVER_MISSING = (
    "no tritonserver: none on PATH and nvidia-pytriton is not installed; "
    "pip install --no-deps 'nvidia-pytriton>=0.7' (it bundles a CPU-capable tritonserver), "
    "or run NVIDIA's Triton container"
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ServerBinary:
    executable: Path
    backend_dir: Path | None = None  # None: the server's own default
    lib_dirs: list[Path] = field(default_factory=list)
    stub: Path | None = None  # a Python-backend stub to place in the python backend folder


def find_server() -> ServerBinary:
    """The tritonserver on PATH (NVIDIA's container), else the one inside the nvidia-pytriton wheel."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return ServerBinary(Path(on_path))
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(SERVER_MISSING)
    root = Path(next(iter(spec.submodule_search_locations)))
    dist = root / "tritonserver"
    exe = dist / "bin" / "tritonserver"
    if not exe.is_file():
        raise MissingDependencyError(f"{exe}: this nvidia-pytriton has no tritonserver binary; {SERVER_MISSING}")
    libs = [p for p in (root.parent / "nvidia_pytriton.libs", dist / "external_libs") if p.is_dir()]
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    return ServerBinary(exe, dist / "backends", libs, stub if stub.is_file() else None)


def _get(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def _die_with_parent(parent: int):
    """A preexec_fn: the server gets SIGTERM (Triton's graceful shutdown) when the process that started it dies,
    even by SIGKILL, where stop() never runs (an orphaned server would keep its ports and CPU). Linux's
    PR_SET_PDEATHSIG fires when the starting *thread* exits, so start servers from a thread that outlives them
    (the main thread, as `serve` and the tests do)."""
    import ctypes

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl: nobody is left to stop us
            os._exit(1)

    return preexec


class TritonServer:
    """One tritonserver process serving `repository` on `host`; a context manager that always stops it."""

    def __init__(
        self,
        repository: str | Path,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        log_file: str | Path | None = None,
        extra_args: list[str] | None = None,
        exit_timeout: int = 5,
    ) -> None:
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise FcnDeployError(f"{self.repository}: no such model repository; write one with `fcn-deploy package`")
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        self.metrics_port = free_port(host)
        self.log_file = Path(log_file) if log_file else None
        self.extra_args = list(extra_args or [])
        self.exit_timeout = exit_timeout
        self.process: subprocess.Popen | None = None
        self._workdir = contextlib.ExitStack()  # fcn-triton.PID.*: a killed run's is swept by the next
        self._log = None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def command(self, binary: ServerBinary, backend_dir: Path | None) -> list[str]:
        cmd = [
            str(binary.executable),
            f"--model-repository={self.repository}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=false",
            "--disable-auto-complete-config",
            "--exit-on-error=true",
            "--strict-readiness=true",
            f"--exit-timeout-secs={self.exit_timeout}",
        ]
        if backend_dir is not None:
            cmd.append(f"--backend-directory={backend_dir}")
            cmd.append(f"--cache-directory={backend_dir.parent / 'caches'}")
        return cmd + self.extra_args

    def start(self, timeout: float = 120.0) -> TritonServer:
        binary = find_server()
        try:  # whatever fails from here on (a copy, the log, Popen, readiness): stop() removes the work dir too
            self._launch(binary)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, binary: ServerBinary) -> None:
        env = os.environ.copy()
        backend_dir = None
        if binary.backend_dir is not None:
            # The stub must sit inside the python backend folder: copy the backends to a private folder.
            workdir = self._workdir.enter_context(scratch_dir("triton"))
            backend_dir = workdir / "backends"
            shutil.copytree(binary.backend_dir, backend_dir, ignore=shutil.ignore_patterns("__pycache__"))
            (workdir / "caches").mkdir()
            if binary.stub is not None:
                shutil.copy2(binary.stub, backend_dir / "python" / "triton_python_backend_stub")
        if binary.lib_dirs:
            libs = ":".join(str(p) for p in binary.lib_dirs)
            env["LD_LIBRARY_PATH"] = f"{env['LD_LIBRARY_PATH']}:{libs}" if env.get("LD_LIBRARY_PATH") else libs
        # The Python-backend stub runs the Python models with this interpreter's environment.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        if self.log_file is not None:
            self._log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()
            out = self._log
        else:
            out = subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.command(binary, backend_dir), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()) if sys.platform == "linux" else None,
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise FcnDeployError(
                    f"{self.repository}: tritonserver exited with code {self.process.returncode} while loading the "
                    f"repository; {self._log_hint()}"
                )
            if _get(url, 1.0) == 200:
                return
            time.sleep(0.2)
        raise FcnDeployError(f"{self.repository}: tritonserver not ready after {timeout:.0f} s; {self._log_hint()}")

    def _log_hint(self) -> str:
        if self.log_file is None:
            return "run `fcn-deploy serve` with --log FILE to see the server's log"
        tail = self.log_file.read_text(errors="replace").strip().splitlines()[-3:] if self.log_file.exists() else []
        return f"see {self.log_file}" + (f" (last lines: {' | '.join(tail)})" if tail else "")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT (Triton's graceful shutdown), then SIGKILL after `timeout`; always reaps the process."""
        rc = None
        if self.process is not None:
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGINT)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            rc = self.process.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        self._workdir.close()
        return rc

    def kill(self) -> None:
        """SIGKILL the server (tests of a server dying mid-run)."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
            self.process.wait()  # type: ignore[union-attr]

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
