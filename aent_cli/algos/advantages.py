"""Trajectory-level advantages from verifiable rewards, shared by every token of a response."""
from __future__ import annotations

import torch

from aent_cli.algos.registry import ADVANTAGES, register


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    return rewards.reshape(-1, group_size).to(torch.float32)


@register(ADVANTAGES, "grpo")
def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group of `group_size` consecutive responses.

    Uses the unbiased std as verl and TRL do. A group of equal rewards gets exactly 0 (0 / eps).
    """
    r = _groups(rewards, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    return (centred / (r.std(dim=1, keepdim=True) + eps)).reshape(rewards.shape)


@register(ADVANTAGES, "drgrpo")
def drgrpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Dr. GRPO: r - mean, without the std scaling that up-weights near-uniform groups."""
    del eps
    r = _groups(rewards, group_size)
    return (r - r.mean(dim=1, keepdim=True)).reshape(rewards.shape)
