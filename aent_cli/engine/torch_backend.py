"""trainer.backend=torch: the plain torch optimiser step (engine/backend.py's TrainingBackend).

With several ranks, gradients are all-reduced by hand (no DDP wrapper: the loss is already scaled
for it, engine/collectives.global_denominator).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Dict

import torch
import torch.distributed as dist

from aent_cli.engine.checkpoint import checkpoint_dir, restore_checkpoint, rng_tensors, save_checkpoint, write_rank_rng
from aent_cli.engine.collectives import all_reduce_gradients, barrier, gather_objects
from aent_cli.engine.distributed import LOCAL, DistEnv
from aent_cli.models.saving import save_model_dir


class TorchBackend:
    """Plain torch optimiser step; with several ranks, each holds a full replica and gradients are
    averaged before clipping, so replicas stay identical."""

    name = "torch"
    lockstep = False  # each rank holds full weights: its forwards need no peers

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
