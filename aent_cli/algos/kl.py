"""Per-token KL(pi_theta || pi_ref) estimators from log-probs of the sampled tokens."""
from __future__ import annotations

import torch

from aent_cli.algos.registry import KL_ESTIMATORS, register


@register(KL_ESTIMATORS, "k1")
def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return logp - ref_logp


@register(KL_ESTIMATORS, "k3")
def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's unbiased, non-negative estimator exp(ref - logp) - (ref - logp) - 1."""
    log_ratio = (ref_logp - logp).clamp(-20.0, 20.0)
    return torch.exp(log_ratio) - log_ratio - 1.0
