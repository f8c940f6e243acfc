"""What the launcher says (torch-free, so the train CLI can read it): rank, world size, restarts, backends.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT for every process;
on SLURM, `srun` starts the processes and the job script exports the same variables from SLURM_PROCID,
SLURM_NTASKS and SLURM_LOCALID (README, "Training on several GPUs or nodes").
"""

from __future__ import annotations

import os

from fcn_deploy.core.errors import FcnDeployError

BACKENDS = ("auto", "gloo", "nccl")
DEFAULT_TIMEOUT_S = 600.0


def env_world() -> tuple[int, int, int, int]:
    """(rank, world_size, local_rank, local_world_size) from the launcher's environment; (0, 1, 0, 1) alone."""

    def num(name: str, default: int) -> int:
        value = os.environ.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise FcnDeployError(f"environment variable {name}={value!r} is not an integer; fix the launcher") from None

    world = num("WORLD_SIZE", 1)
    rank, local = num("RANK", 0), num("LOCAL_RANK", 0)
    local_world = num("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world:
        raise FcnDeployError(f"RANK={rank} with WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE; fix the launcher")
    return rank, world, local, local_world


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that prints and writes."""
    return env_world()[0] == 0


def elastic_restart() -> bool:
    """torchrun restarted the workers after a failure (--max-restarts): the run continues from last.pt."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
