"""Per-token policy-optimisation losses (to minimise) and their diagnostics."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from aent_cli.algos.aggregation import masked_mean
from aent_cli.algos.registry import POLICY_LOSSES, register

LossAndStats = Tuple[torch.Tensor, Dict[str, torch.Tensor]]


@register(POLICY_LOSSES, "ppo_clip")
def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.2,
    dual_clip_c: Optional[float] = None,
    **_,
) -> LossAndStats:
    """-min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A) per token (GRPO; DAPO with eps_high > eps_low).

    With `dual_clip_c`, a negative-advantage token's loss is also capped at -c * A so a huge ratio on
    a bad token cannot dominate the batch.
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high)
    loss = torch.maximum(unclipped, clipped)
    stats = {"pg_clipfrac": masked_mean((clipped > unclipped).float(), mask)}
    if dual_clip_c is not None:
        capped = torch.minimum(loss, -advantages * dual_clip_c)
        dual = (advantages < 0) & (loss > capped)
        loss = torch.where(advantages < 0, capped, loss)
        stats["pg_clipfrac_dual"] = masked_mean(dual.float(), mask)
    stats["ppo_kl"] = masked_mean(-log_ratio, mask).detach()
    return loss, {k: v.detach() for k, v in stats.items()}


@register(POLICY_LOSSES, "reinforce")
def reinforce_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, **_
) -> LossAndStats:
    """-A * log pi(a|s): REINFORCE with the group baseline already inside A (pi_b = pi_theta, no ratio)."""
    loss = -advantages * logp
    zero = torch.zeros((), device=logp.device)
    return loss, {"pg_clipfrac": zero, "ppo_kl": masked_mean(old_logp - logp, mask).detach()}
