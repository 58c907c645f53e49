"""Collectives over the ranks of a data-parallel run (engine/distributed.py's DistEnv): the identity
with one rank, so single-process code calls them unconditionally."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Sequence

import torch
import torch.distributed as dist

from aent_cli.engine.distributed import DistEnv


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
