"""The process environment of data-parallel training: this process's rank among those `torchrun` or
the `deepspeed` launcher started, its device, and the process group.

Each rank rolls out, grades and trains on its share of a step's queries (whole GRPO groups); the
numbers that must agree everywhere are reduced by `engine/collectives.py`, so the run computes what
one process would on the whole batch. With one process no process group is created (the plain
`aent train` path). The training backends: `engine/backend.py` (the contract), `engine/torch_backend.py`,
`engine/deepspeed_backend.py`.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, replace
from typing import Mapping, Optional

import torch
import torch.distributed as dist

from aent_cli.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collectives put their tensors (cuda:<local_rank> under nccl)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether collectives have peers (a process group exists and has more than one rank)."""
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


LOCAL = DistEnv()


def _int_env(environ: Mapping[str, str], key: str, default: int) -> int:
    raw = environ.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {key}={raw!r} is not an integer") from None


def detect_env(environ: Optional[Mapping[str, str]] = None) -> DistEnv:
    """Rank, world size and local rank as `torchrun` and the `deepspeed` launcher export them."""
    environ = os.environ if environ is None else environ
    world = _int_env(environ, "WORLD_SIZE", 1)
    rank = _int_env(environ, "RANK", 0)
    local = _int_env(environ, "LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"RANK={rank} WORLD_SIZE={world}: the rank must lie in [0, WORLD_SIZE)")
    if world > 1 and not (environ.get("MASTER_ADDR") and environ.get("MASTER_PORT")):
        raise UserError(f"WORLD_SIZE={world} but MASTER_ADDR/MASTER_PORT are not set: "
                        "start multi-process runs with torchrun or the deepspeed launcher")
    return DistEnv(rank=rank, world_size=world, local_rank=local)


def check_divisible(env: DistEnv, batch_size: int, mini_batch_size: int) -> None:
    """Every rank must hold whole groups and the same number of them (collectives run in lockstep)."""
    for key, value in (("trainer.batch_size", batch_size), ("trainer.mini_batch_size", mini_batch_size)):
        if value % env.world_size:
            raise UserError(f"{key}={value} is not divisible by the world size {env.world_size}: "
                            "each rank trains on an equal share of the queries")


def local_device(env: DistEnv, device: torch.device) -> torch.device:
    """One GPU per rank on a node: cuda:<LOCAL_RANK>."""
    if device.type == "cuda":
        if env.world_size > 1 and env.local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK={env.local_rank} but this node has {torch.cuda.device_count()} GPUs")
        index = env.local_rank if env.world_size > 1 else (device.index or 0)
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return device


def init_distributed(env: DistEnv, device: torch.device, single_process_group: bool = False) -> DistEnv:
    """Join the process group (gloo on CPU, nccl on GPU) and return env with its comm device.

    `single_process_group` also creates a one-rank group when nothing launched us (DeepSpeed needs
    one); it lives in memory (HashStore), so no port is opened, and the caller destroys it when
    done. A launcher's group stays for the life of the process (later runs in it reuse it: a
    re-created group would meet the first one's keys in the launcher's store) and ends at exit."""
    env = replace(env, device=str(device) if device.type == "cuda" else "cpu")
    if dist.is_initialized() or (env.world_size == 1 and not single_process_group):
        return env
    backend = "nccl" if device.type == "cuda" else "gloo"
    if env.world_size == 1:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    else:
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, init_method="env://", rank=env.rank, world_size=env.world_size, **kwargs)
        atexit.register(shutdown)
    return env


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
