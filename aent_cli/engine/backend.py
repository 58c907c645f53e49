"""The training-backend contract: what the trainer and the update step (engine/update.py) call on
`trainer.backend=torch` (engine/torch_backend.py) and `trainer.backend=deepspeed`
(engine/deepspeed_backend.py), and nothing else.

A backend owns the trained model's optimiser step across ranks: it is told of every forward
(`prepare_forward`), runs backward and the step, switches the weights to generation, and writes and
restores checkpoints. `lockstep` is True when every rank must make the same module calls in a
forward (DeepSpeed ZeRO-3 gathers partitioned weights collectively at each call): the log-prob pass
then runs on module calls only, `prepare_forward`'s chunk count apart (models/logprobs.py).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ContextManager, Dict, Protocol, runtime_checkable

import torch

from aent_cli.engine.distributed import DistEnv


@runtime_checkable
class TrainingBackend(Protocol):
    name: str  # "torch" | "deepspeed": recorded in checkpoints
    env: DistEnv  # this process's rank; collectives go through it
    model: torch.nn.Module  # the module the trainer calls (under DeepSpeed: the engine's module)
    lockstep: bool

    def prepare_forward(self, n_tokens: int, chunk: int) -> int:
        """Called before each forward of the trained model over `n_tokens` scored tokens; returns the
        least number of LM-head chunks of `chunk` positions it must run (0: as many as it needs)."""

    def zero_grad(self) -> None:
        """Clear gradients before a mini-batch's first micro-batch."""

    def backward(self, loss: torch.Tensor, last_micro: bool = True) -> None:
        """Accumulate d loss; `last_micro` marks the mini-batch's last micro-batch (gradients reduce there)."""

    def step(self, grad_clip: float) -> float:
        """One optimiser step on the accumulated gradients, clipped to `grad_clip`; returns the
        pre-clip global gradient norm."""

    def generation_context(self) -> ContextManager[None]:
        """Full weights, no training hooks, for sampling with the trained model."""

    def save_checkpoint(self, run_dir: Path, step: int, tokenizer, state: Dict[str, Any], keep: int) -> Path:
        """Write checkpoints/step_<step> (weights, optimiser, RNG, `state`) under run_dir, keeping the
        newest `keep`; returns its path (every rank calls it)."""

    def restore_checkpoint(self, ckpt: Path) -> Dict[str, Any]:
        """Load weights, optimiser and RNG from `ckpt`; returns its trainer state."""

    def save_model(self, directory: Path, tokenizer) -> None:
        """The final model as a Hugging Face folder (rank 0 writes)."""

    def close(self) -> None:
        """Release the backend's resources."""


def chunk_count(n_tokens: int, chunk: int) -> int:
    """LM-head chunks of `chunk` positions that `n_tokens` positions need."""
    return math.ceil(n_tokens / chunk)
