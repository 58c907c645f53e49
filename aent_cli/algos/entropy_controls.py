"""Other entropy controls to compare AEnt against, as policy-loss variants selected by `algo.policy_loss`.

- clip_cov, kl_cov: Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning
  Language Models". Entropy falls when log-prob and advantage co-vary, so both act on the few tokens
  with the largest covariance (logp_i - mean logp)(A_i - mean A): Clip-Cov drops the gradient of a random
  few of those inside [lower, upper]; KL-Cov adds coef * |logp - old_logp| to the top fraction.
- high_entropy_mask: Wang et al. 2025, "Beyond the 80/20 Rule": the policy gradient flows only through
  the top-rho fraction of tokens by entropy (the "forking" tokens).
The fourth comparison, a coefficient steered toward a target entropy, is a controller: coef.py.

Each function takes a PolicyLossInput (algos/policy.py) and returns (per_token_loss [B, T], detached stats); the
stats are logged as `actor/<key>`. "The batch" over which means, fractions and quantiles are taken is
the one compute_loss is given (one micro-batch, as in verl); a token whose gradient a method drops
keeps its loss *value* (detached), so `actor/pg_loss` stays the PPO loss of every token and compares
across methods. verl and TRL multiply such tokens by zero instead: the gradient is the same.
Settings are read from the `algo` config section; their published defaults (verl's clip_cov_ratio,
clip_cov_lb/ub, kl_cov_ratio, ppo_kl_coef; Wang et al.'s rho) are the schema's (config/schema.py, AlgoConfig).
"""
from __future__ import annotations

from typing import Any

import torch

from aent_cli.algos.aggregation import masked_mean
from aent_cli.algos.policy import LossAndStats, PolicyLossInput, ppo_clip, ppo_clip_loss
from aent_cli.algos.registry import POLICY_LOSSES, register

def _setting(algo: Any, key: str) -> float:
    """algo.<key> as a float; ValueError naming the key when the algo section lacks it."""
    value = getattr(algo, key, None)
    if value is None:
        raise ValueError(f"the algo section has no {key} (config/schema.py AlgoConfig holds its default)")
    return float(value)


def token_covariance(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(logp_i - mean logp) * (A_i - mean A) per token, means over the valid tokens; 0 at padding. No grad."""
    with torch.no_grad():
        dtype = torch.float64 if logp.dtype == torch.float64 else torch.float32
        logp, advantages = logp.detach().to(dtype), advantages.detach().to(dtype)
        cov = (logp - masked_mean(logp, mask)) * (advantages - masked_mean(advantages, mask))
        return torch.where(mask.bool(), cov, torch.zeros((), dtype=dtype, device=cov.device))


def _random_subset(candidates: torch.Tensor, count: int) -> torch.Tensor:
    """`count` of the True entries of `candidates` (all if fewer), drawn with torch's global CPU RNG."""
    flat = candidates.reshape(-1)
    index = flat.nonzero().squeeze(-1)
    if index.numel() > count:
        index = index[torch.randperm(index.numel())[:count].to(index.device)]
    chosen = torch.zeros_like(flat)
    chosen[index] = True
    return chosen.reshape(candidates.shape)


def _top_count(scores: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` valid tokens with the largest scores, as a boolean [B, T] mask."""
    valid = mask.bool().reshape(-1)
    flat = scores.reshape(-1).masked_fill(~valid, float("-inf"))
    chosen = torch.zeros_like(valid)
    if count > 0:
        chosen[torch.topk(flat, count).indices] = True
    return chosen.reshape(scores.shape)


def _selection_count(fraction: float, n_valid: int) -> int:
    """verl's rule: max(int(fraction * n), 1) tokens, none of an empty batch."""
    return max(int(fraction * n_valid), 1) if n_valid > 0 else 0


@register(POLICY_LOSSES, "clip_cov")
def clip_cov_loss(inputs: PolicyLossInput) -> LossAndStats:
    """PPO-clip with the gradient of a random max(int(cov_ratio * n), 1) tokens removed.

    They are drawn uniformly from the valid tokens whose covariance lies strictly inside
    (cov_clip_lower, cov_clip_upper) and which PPO's clip has not already cut off, as verl does.
    """
    algo, logp, advantages, mask = inputs.algo, inputs.log_probs, inputs.advantages, inputs.response_mask
    ratio, lower, upper = (_setting(algo, k) for k in ("cov_ratio", "cov_clip_lower", "cov_clip_upper"))
    loss, stats, already = ppo_clip(inputs)  # `already`: a clip binds there, the gradient is 0 anyway
    valid = mask.bool()
    cov = token_covariance(logp, advantages, mask)
    candidates = valid & ~already & (cov > lower) & (cov < upper)
    chosen = _random_subset(candidates, _selection_count(ratio, int(valid.sum())))
    loss = torch.where(chosen, loss.detach(), loss)
    stats["cov_clip_frac"] = masked_mean(chosen.float(), mask)
    return loss, stats


@register(POLICY_LOSSES, "kl_cov")
def kl_cov_loss(inputs: PolicyLossInput) -> LossAndStats:
    """-rho * A per token, plus kl_cov_coef * |logp - old_logp| on the top max(int(kl_cov_ratio * n), 1)
    valid tokens by covariance.

    As in the paper (eq. for L_KL-Cov) and verl, the surrogate is *not* clipped: the KL penalty on the
    high-covariance tokens replaces PPO's clip, so clip_eps_* and dual_clip_c are unused here.
    """
    algo, logp, advantages, mask = inputs.algo, inputs.log_probs, inputs.advantages, inputs.response_mask
    old_logp = inputs.old_log_probs
    fraction, coef = _setting(algo, "kl_cov_ratio"), _setting(algo, "kl_cov_coef")
    log_ratio = logp - old_logp
    loss = -advantages * torch.exp(log_ratio)
    cov = token_covariance(logp, advantages, mask)
    chosen = _top_count(cov, mask, _selection_count(fraction, int(mask.bool().sum())))
    loss = loss + coef * log_ratio.abs() * chosen.to(loss.dtype)
    stats = {
        "pg_clipfrac": torch.zeros((), device=logp.device),
        "ppo_kl": masked_mean(-log_ratio, mask),
        "kl_cov_frac": masked_mean(chosen.float(), mask),
    }
    return loss, {k: v.detach() for k, v in stats.items()}


def masked_quantile(values: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of the valid entries, linearly interpolated (torch.quantile's default), of any size."""
    picked = values[mask.bool()].detach().float().sort().values
    if picked.numel() == 0:
        return torch.tensor(float("inf"), device=values.device)
    position = q * (picked.numel() - 1)
    low = int(position)
    high = min(low + 1, picked.numel() - 1)
    return picked[low] + (picked[high] - picked[low]) * (position - low)


def high_entropy_tokens(token_entropy: torch.Tensor, mask: torch.Tensor, rho: float) -> torch.Tensor:
    """Valid tokens whose entropy is >= the (1 - rho)-quantile of the batch's valid entropies (TRL's rule)."""
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"entropy_mask_rho={rho} must satisfy 0 < rho <= 1")
    threshold = masked_quantile(token_entropy, mask, 1.0 - rho)
    return mask.bool() & (token_entropy.detach().float() >= threshold)


@register(POLICY_LOSSES, "high_entropy_mask")
def high_entropy_mask_loss(inputs: PolicyLossInput) -> LossAndStats:
    """PPO-clip whose gradient flows only through the top-rho fraction of valid tokens by entropy.

    `inputs.token_entropy` is the detached per-token full entropy [B, T]. The aggregation's denominator
    still counts every valid token, as in the paper's objective (an indicator inside the token mean).
    """
    token_entropy, algo, mask = inputs.token_entropy, inputs.algo, inputs.response_mask
    if token_entropy is None:
        raise ValueError("policy_loss=high_entropy_mask needs token_entropy, the per-token full entropy")
    loss, stats = ppo_clip_loss(inputs)
    keep = high_entropy_tokens(token_entropy, mask, _setting(algo, "entropy_mask_rho"))
    loss = torch.where(keep, loss, loss.detach())
    stats["entropy_mask_frac"] = masked_mean(keep.float(), mask)
    return loss, stats
