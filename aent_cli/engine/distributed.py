"""Data parallelism across processes started by `torchrun` or the `deepspeed` launcher.

Each rank rolls out, grades and trains on its share of a step's queries (whole GRPO groups), and the
numbers that must agree everywhere (loss denominators, entropy, metrics, gradients) are reduced
here, so the run computes what one process would on the whole batch. With one process every helper
is the identity and no process group is created (the plain `aent train` path).

Also here: `TorchBackend`, the optimiser step of `trainer.backend=torch` (gradients all-reduced by
hand when there are several ranks, no DDP wrapper: the loss is already scaled for it). The DeepSpeed
counterpart with the same methods is `engine/deepspeed_backend.py`.
"""
from __future__ import annotations

import atexit
import contextlib
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import torch
import torch.distributed as dist

from aent_cli.engine.checkpoint import checkpoint_dir, restore_checkpoint, rng_tensors, save_checkpoint, write_rank_rng
from aent_cli.errors import UserError
from aent_cli.models.saving import save_model_dir


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


# --- collectives (identity with one rank) -------------------------------------------------------

def all_reduce_sum(values: Sequence[float], env: DistEnv) -> List[float]:
    """Element-wise sums over ranks of a list of floats, in one collective (float64)."""
    if not env.active:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=env.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_reduce_max(value: int, env: DistEnv) -> int:
    if not env.active:
        return int(value)
    tensor = torch.tensor([int(value)], dtype=torch.int64, device=env.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def mean_over_ranks(stats: Dict[str, float], env: DistEnv) -> Dict[str, float]:
    keys = sorted(stats)
    sums = all_reduce_sum([stats[k] for k in keys], env)
    return {k: s / env.world_size for k, s in zip(keys, sums)}


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's value on every rank (run names, MLflow run ids: small objects of our own)."""
    if not env.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=torch.device(env.device))
    return box[0]


def gather_objects(obj: Any, env: DistEnv) -> List[Any]:
    if not env.active:
        return [obj]
    out: List[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.active:
        dist.barrier()


@contextlib.contextmanager
def main_first(env: DistEnv) -> Iterator[None]:
    """Rank 0 runs the body first (e.g. builds a shared cache), then the others."""
    if not env.is_main:
        barrier(env)
    yield
    if env.is_main:
        barrier(env)


def shard(items: Sequence, env: DistEnv) -> list:
    """This rank's contiguous block of an evenly divisible sequence (queries: whole groups)."""
    if len(items) % env.world_size:
        raise ValueError(f"{len(items)} items do not split evenly over {env.world_size} ranks")
    size = len(items) // env.world_size
    return list(items[env.rank * size:(env.rank + 1) * size])


def shard_uneven(items: Sequence, env: DistEnv) -> list:
    """Every world_size-th item from this rank's offset (validation sets of any size)."""
    return list(items[env.rank::env.world_size])


def global_denominator(local: float, env: DistEnv) -> float:
    """The loss denominator that makes averaged gradients equal one process's on the whole batch.

    Gradient averaging divides by the world size, so each rank divides its local sum by
    (global count / world size): mean_r(S_r / (N / W)) = sum_r S_r / N."""
    if not env.active:
        return float(local)
    return all_reduce_sum([local], env)[0] / env.world_size


def all_reduce_gradients(parameters: Sequence[torch.nn.Parameter], env: DistEnv) -> None:
    """Average .grad over ranks in one flat buffer (a missing grad counts as zeros, so every rank
    sends the same layout)."""
    if not env.active:
        return
    params = [p for p in parameters if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= env.world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        chunk = flat[offset:offset + n].view_as(g)
        if p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)
        offset += n


class SilentTracker:
    """What ranks other than 0 hold in place of the MLflow run: rank 0 alone records."""

    def __init__(self, run_id: Optional[str]) -> None:
        self.run_id = run_id

    def log(self, metrics: Dict[str, float], step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def set_tags(self, tags: Dict[str, str]) -> None:
        pass

    def end(self, status: str) -> None:
        pass

    def finish(self, result) -> None:
        pass


# --- the torch training backend ----------------------------------------------------------------

class TorchBackend:
    """Plain torch optimiser step; with several ranks, each holds a full replica and gradients are
    averaged before clipping, so replicas stay identical."""

    name = "torch"

    def __init__(self, model, optimizer: torch.optim.Optimizer, env: DistEnv = LOCAL) -> None:
        self.model, self.optimizer, self.env = model, optimizer, env
        if env.active:  # replicas must start equal even if a caller seeded ranks differently
            for tensor in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(tensor.data, src=0)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, last_micro: bool = True) -> None:
        loss.backward()

    def step(self, grad_clip: float) -> float:
        all_reduce_gradients(list(self.model.parameters()), self.env)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.optimizer.step()
        return float(norm)

    def prepare_forward(self, n_tokens: int, chunk: int) -> int:
        """Called before each forward of the trained model; the least number of LM-head chunks
        it must run (0: as many as its tokens need)."""
        return 0  # no collectives inside a forward

    def generation_context(self):
        return contextlib.nullcontext()

    def save_checkpoint(self, run_dir: Path, step: int, tokenizer, state: Dict[str, Any], keep: int) -> Path:
        rngs = gather_objects(rng_tensors(), self.env)
        path = checkpoint_dir(run_dir, step)
        if self.env.is_main:
            path = save_checkpoint(run_dir, step, self.model, tokenizer, self.optimizer,
                                   {**state, "world_size": self.env.world_size, "backend": self.name}, keep,
                                   write_extra=lambda tmp: write_rank_rng(tmp, rngs))
        barrier(self.env)
        return path

    def restore_checkpoint(self, ckpt: Path) -> Dict[str, Any]:
        return restore_checkpoint(ckpt, self.model, self.optimizer, rank=self.env.rank)

    def save_model(self, directory: Path, tokenizer) -> None:
        if self.env.is_main:
            save_model_dir(self.model, tokenizer, directory)  # save_pretrained would import DeepSpeed (~15 s)
        barrier(self.env)

    def close(self) -> None:
        pass


def as_backend(model, optimizer_or_backend, env: DistEnv = LOCAL):
    """Callers may pass a torch optimiser (one process) or a ready backend."""
    if hasattr(optimizer_or_backend, "prepare_forward"):
        return optimizer_or_backend
    return TorchBackend(model, optimizer_or_backend, env)


def chunk_count(n_tokens: int, chunk: int) -> int:
    return math.ceil(n_tokens / chunk)
