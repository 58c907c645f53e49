"""Trajectory-level advantages from verifiable rewards, shared by every token of a response.

Groups are named by `group_index` (verl's `index`): row i belongs to group `group_index[i]`, so rows of a
group need not be adjacent and groups need not be the same size.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from aent_cli.algos.registry import ADVANTAGES, register

# A group whose rewards differ by at most this many ulps of their magnitude counts as all equal: the
# same reward reached by different float sums (0.1 + 1.0 vs 1.1) must not push the policy one way.
_EQUAL_ULPS = 4


class _Groups(NamedTuple):
    rewards: torch.Tensor  # [N] float64 (a group mean of 0.1s is then exact)
    of_row: torch.Tensor  # [N] int64, 0..G-1: the group of each row
    size: torch.Tensor  # [G] float64

    def reduce(self, values: torch.Tensor, how: str) -> torch.Tensor:
        """[N] -> [G] per-group "sum" / "amax" / "amin" of `values`."""
        out = torch.zeros(len(self.size), dtype=values.dtype, device=values.device)
        return out.scatter_reduce(0, self.of_row, values, how, include_self=False)


def consecutive_groups(n_rows: int, group_size: int) -> torch.Tensor:
    """[n_rows] int64 group index of `group_size` consecutive rows per group (0,0,..,1,1,..)."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return torch.arange(n_rows) // group_size


def _groups(rewards: torch.Tensor, group_index: torch.Tensor) -> _Groups:
    if group_index.shape != rewards.shape or rewards.dim() != 1:
        raise ValueError(f"rewards {tuple(rewards.shape)} and group_index {tuple(group_index.shape)} must be "
                         "the same 1-d shape")
    if group_index.dtype.is_floating_point or group_index.dtype.is_complex:
        raise ValueError(f"group_index must hold integers, got {group_index.dtype}")
    if rewards.dtype.is_floating_point and not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards must be finite (a reward function returned NaN or inf)")
    _, of_row = torch.unique(group_index.to(rewards.device), return_inverse=True)
    return _Groups(rewards.to(torch.float64), of_row, torch.bincount(of_row).to(torch.float64))


def _equal(rewards: torch.Tensor, g: _Groups) -> torch.Tensor:
    """[N] True where the row's group spread is within _EQUAL_ULPS ulps (of the input dtype)."""
    eps = torch.finfo(rewards.dtype).eps if rewards.dtype.is_floating_point else 0.0
    spread = g.reduce(g.rewards, "amax") - g.reduce(g.rewards, "amin")
    scale = g.reduce(g.rewards.abs(), "amax").clamp(min=1.0)
    return (spread <= _EQUAL_ULPS * eps * scale)[g.of_row]


def _centred(g: _Groups) -> torch.Tensor:
    """[N] float64 reward minus its group's mean."""
    return g.rewards - (g.reduce(g.rewards, "sum") / g.size)[g.of_row]


@register(ADVANTAGES, "grpo")
def grpo_advantages(rewards: torch.Tensor, group_index: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group (GRPO, Shao et al. 2024, eq. 3; verl
    `compute_grpo_outcome_advantage`).

    rewards [N], group_index [N] int -> advantages [N] float32, computed in float64. Uses the unbiased std
    as verl and TRL do. A group of equal rewards (spread within a few ulps), or of one row, gets exactly 0.
    Raises ValueError when the two shapes differ, a reward is NaN or inf, or the index is not integer.
    """
    g = _groups(rewards, group_index)
    centred = _centred(g)
    variance = g.reduce(centred * centred, "sum") / (g.size - 1).clamp(min=1.0)
    adv = centred / (variance.sqrt()[g.of_row] + eps)
    return adv.masked_fill(_equal(rewards, g), 0.0).to(torch.float32)


@register(ADVANTAGES, "drgrpo")
def drgrpo_advantages(rewards: torch.Tensor, group_index: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Dr. GRPO (Liu et al. 2025): r - mean, without the std scaling that up-weights near-uniform groups.
    rewards [N], group_index [N] int -> advantages [N] float32; a group of equal rewards gets exactly 0.
    Raises ValueError as grpo_advantages does."""
    del eps
    g = _groups(rewards, group_index)
    return _centred(g).masked_fill(_equal(rewards, g), 0.0).to(torch.float32)
