"""Data-parallel training across processes (torchrun, srun, or any launcher that sets RANK/WORLD_SIZE).

The launcher's environment decides: WORLD_SIZE > 1 means one process per GPU (or per CPU slot), each running the
same `fcn-deploy train` command; RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT say who and where. The backend is
nccl on CUDA and gloo on the CPU unless `--dist-backend` says otherwise.

Every collective goes through `Dist.call`, which turns a lost peer (a rank killed, a node gone, a timeout) into
one FcnDeployError line naming this rank, so a dead rank never leaves the others hanging past `--dist-timeout`.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.training.launch import BACKENDS, DEFAULT_TIMEOUT_S, env_world

T = TypeVar("T")


@dataclass
class Dist:
    """This process's place in the run; a single process is rank 0 of 1 and every collective is a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def who(self) -> str:
        return f"rank {self.rank} of {self.world_size}"

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run a collective (or a step that contains DDP's); a lost peer becomes one line naming the ranks."""
        try:
            return fn()
        except FcnDeployError:
            raise
        except RuntimeError as e:  # torch.distributed.DistError subclasses RuntimeError
            if not self.enabled:
                raise
            detail = re.sub(r"\[[^\]]*third_party/\S*\] ", "", str(e).strip())
            detail = (detail.splitlines() or [type(e).__name__])[0].split(". ")[0][:120]
            gone = self.silent_ranks()
            who = f"rank {', '.join(map(str, gone))} stopped or hung" if gone else "another rank stopped"
            raise FcnDeployError(
                f"{self.who}: {what} failed: {who} ({detail}); the checkpoints on disk are whole: "
                "fix the failed rank and rerun with --resume"
            ) from None

    def silent_ranks(self, wait_s: float = 3.0) -> list[int]:
        """After a failed collective: the ranks that do not check in through the rendezvous store within
        `wait_s` (dead or hung); [] when the store itself is gone (it lived with the failed process)."""
        silent: list[int] = []
        try:
            store = torch.distributed.distributed_c10d._get_default_store()
            round_ = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            key = f"fcn-deploy/lost/{round_}/{{}}".format
            store.set(key(self.rank), "1")
            others = [r for r in range(self.world_size) if r != self.rank]
            deadline = time.monotonic() + wait_s
            while True:
                silent = [r for r in others if not store.check([key(r)])]
                if not silent or time.monotonic() > deadline:
                    return silent
                time.sleep(0.1)
        except FcnDeployError:  # the launcher's SIGTERM: what is known so far
            return silent
        except Exception:  # noqa: BLE001 - best effort: the message then names no rank
            return []

    def all_reduce_sum(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        """Sum `tensor` over the ranks in place (on the process group's device) and return it on its own."""
        if not self.enabled:
            return tensor
        device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else "cpu"
        buf = tensor.to(device)
        self.call(what, lambda: torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM))
        return buf.to(tensor.device)

    def broadcast(self, value: Any, what: str) -> Any:
        """Rank 0's `value` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        box = [value]
        self.call(what, lambda: torch.distributed.broadcast_object_list(box, src=0))
        return box[0]

    def barrier(self, what: str) -> None:
        if self.enabled:
            self.call(what, torch.distributed.barrier)

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def pick_backend(requested: str, device: torch.device) -> str:
    if requested not in BACKENDS:
        raise FcnDeployError(f"--dist-backend {requested!r}: choose one of {', '.join(BACKENDS)}")
    if requested == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if requested == "nccl" and device.type != "cuda":
        raise FcnDeployError("--dist-backend nccl needs CUDA devices; on the CPU use gloo (or auto)")
    if not torch.distributed.is_backend_available(requested):
        raise FcnDeployError(f"--dist-backend {requested}: this PyTorch build has no {requested}; use auto")
    return requested


def process_device(device: str, local_rank: int, world_size: int) -> torch.device:
    """The device of this process: cuda:LOCAL_RANK under a launcher when CUDA is used, else the named one."""
    from fcn_deploy.training.device import resolve_device

    if world_size == 1:
        return resolve_device(device)
    if device.startswith("cuda:"):
        raise FcnDeployError(
            f"--device {device}: with {world_size} processes each takes the GPU of its LOCAL_RANK; "
            "pass --device cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    dev = resolve_device(device)
    if dev.type != "cuda":
        return dev
    if local_rank >= torch.cuda.device_count():
        raise FcnDeployError(
            f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
            "start at most one process per GPU (--nproc-per-node)"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def setup(device: str, backend: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[Dist, torch.device]:
    """Join the process group the launcher describes (nothing to join alone); returns it and this rank's device."""
    rank, world, local, local_world = env_world()
    dev = process_device(device, local, world)
    if world == 1:
        return Dist(), dev
    if timeout_s <= 0:
        raise FcnDeployError(f"--dist-timeout must be > 0 seconds, got {timeout_s:g}")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise FcnDeployError(
                f"WORLD_SIZE={world} but {name} is not set; launch with torchrun, or export MASTER_ADDR and "
                "MASTER_PORT (and RANK, LOCAL_RANK) for every process as on SLURM"
            )
    name = pick_backend(backend, dev)
    dist = Dist(rank, world, local, local_world, name)
    _stop_on_sigterm(dist)
    try:
        torch.distributed.init_process_group(
            name, init_method="env://", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
        )
    except (RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise FcnDeployError(
            f"{dist.who}: cannot join the other processes at {os.environ['MASTER_ADDR']}:"
            f"{os.environ['MASTER_PORT']} ({first}); check that every rank started and the address is reachable"
        ) from None
    return dist, dev


def _stop_on_sigterm(dist: Dist) -> None:
    """torchrun stops the surviving workers with SIGTERM when one fails: leave with one line, not a traceback."""

    def handler(signum: int, frame: Any) -> None:
        raise FcnDeployError(
            f"{dist.who}: stopped by the launcher (SIGTERM), usually because another rank failed (its rank is "
            "in torchrun's 'Root Cause' report); the checkpoints on disk are whole: rerun with --resume"
        )

    signal.signal(signal.SIGTERM, handler)


def cpu_threads(dist: Dist, threads: int | None) -> int | None:
    """Several CPU processes on one node share its cores: each takes its slice unless --threads says otherwise."""
    if threads is not None or not dist.enabled:
        return threads
    from fcn_deploy.training.device import auto_threads

    share = max(1, (os.cpu_count() or 1) // max(1, dist.local_world_size))
    auto = auto_threads()
    return min(share, auto) if auto is not None else share
