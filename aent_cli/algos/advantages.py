"""Trajectory-level advantages from verifiable rewards, shared by every token of a response."""
from __future__ import annotations

import torch

from aent_cli.algos.registry import ADVANTAGES, register

# A group whose rewards differ by at most this many ulps of their magnitude counts as all equal: the
# same reward reached by different float sums (0.1 + 1.0 vs 1.1) must not push the policy one way.
_EQUAL_ULPS = 4


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """rewards [N] -> [N / group_size, group_size] in float64 (a group mean of 0.1s is then exact)."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    return rewards.reshape(-1, group_size).to(torch.float64)


def _equal_groups(rewards: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """[groups, 1] True where a group's spread is within _EQUAL_ULPS ulps (of the input dtype)."""
    eps = torch.finfo(rewards.dtype).eps if rewards.dtype.is_floating_point else 0.0
    spread = r.amax(dim=1, keepdim=True) - r.amin(dim=1, keepdim=True)
    scale = r.abs().amax(dim=1, keepdim=True).clamp(min=1.0)
    return spread <= _EQUAL_ULPS * eps * scale


@register(ADVANTAGES, "grpo")
def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group of `group_size` consecutive responses.

    rewards [N] -> advantages [N] float32, computed in float64. Uses the unbiased std as verl and TRL
    do. A group of equal rewards (spread within a few ulps) gets exactly 0.
    """
    r = _groups(rewards, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    adv = centred / (r.std(dim=1, keepdim=True) + eps)
    adv = adv.masked_fill(_equal_groups(rewards, r), 0.0)
    return adv.to(torch.float32).reshape(rewards.shape)


@register(ADVANTAGES, "drgrpo")
def drgrpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Dr. GRPO: r - mean, without the std scaling that up-weights near-uniform groups.
    rewards [N] -> advantages [N] float32; a group of equal rewards gets exactly 0."""
    del eps
    r = _groups(rewards, group_size)
    adv = (r - r.mean(dim=1, keepdim=True)).masked_fill(_equal_groups(rewards, r), 0.0)
    return adv.to(torch.float32).reshape(rewards.shape)
