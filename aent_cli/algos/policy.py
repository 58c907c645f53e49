"""Per-token policy-optimisation losses (to minimise) and their diagnostics.

Every registered policy loss (here and in entropy_controls.py) takes one `PolicyLossInput` and
returns (per-token loss [B, T], detached stats), so the inputs are named once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch

from aent_cli.algos.aggregation import masked_mean
from aent_cli.algos.registry import POLICY_LOSSES, register

LossAndStats = Tuple[torch.Tensor, Dict[str, torch.Tensor]]


@dataclass(frozen=True)
class PolicyLossInput:
    """What a policy loss sees: all tensors [B, T] over response tokens.

    `log_probs` carry the gradient; `old_log_probs` are pi_old's (detached); `advantages` are per
    token (compute_loss broadcasts GRPO's per-response ones); `response_mask` is 1 on scored tokens.
    `algo` is the algo config section, for method settings (cov_ratio, entropy_mask_rho, ...);
    `token_entropy` the detached per-token full entropy (policy_loss=high_entropy_mask needs it).
    """
    log_probs: torch.Tensor
    old_log_probs: torch.Tensor
    advantages: torch.Tensor
    response_mask: torch.Tensor
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    dual_clip_c: Optional[float] = None
    algo: Any = None
    token_entropy: Optional[torch.Tensor] = None


def ppo_clip(inputs: PolicyLossInput) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
    """ppo_clip_loss's (loss, stats) plus the boolean [B, T] tokens where a clip binds (the ratio's
    clip or the dual clip), whose gradient is therefore 0: clip_cov leaves those alone."""
    logp, advantages, mask = inputs.log_probs, inputs.advantages, inputs.response_mask
    log_ratio = logp - inputs.old_log_probs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - inputs.clip_eps_low, 1.0 + inputs.clip_eps_high)
    loss = torch.maximum(unclipped, clipped)
    binds = clipped > unclipped
    stats = {"pg_clipfrac": masked_mean(binds.float(), mask)}
    if inputs.dual_clip_c is not None:
        capped = torch.minimum(loss, -advantages * inputs.dual_clip_c)
        dual = (advantages < 0) & (loss > capped)
        loss = torch.where(advantages < 0, capped, loss)
        stats["pg_clipfrac_dual"] = masked_mean(dual.float(), mask)
        binds = binds | dual
    stats["ppo_kl"] = masked_mean(-log_ratio, mask).detach()
    return loss, {k: v.detach() for k, v in stats.items()}, binds


@register(POLICY_LOSSES, "ppo_clip")
def ppo_clip_loss(inputs: PolicyLossInput) -> LossAndStats:
    """-min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A) per token (GRPO; DAPO with eps_high > eps_low).

    With `dual_clip_c`, a negative-advantage token's loss is also capped at -c * A so a huge ratio on
    a bad token cannot dominate the batch.
    """
    loss, stats, _ = ppo_clip(inputs)
    return loss, stats


@register(POLICY_LOSSES, "reinforce")
def reinforce_loss(inputs: PolicyLossInput) -> LossAndStats:
    """-A * log pi(a|s): REINFORCE with the group baseline already inside A (pi_b = pi_theta, no ratio)."""
    logp = inputs.log_probs
    loss = -inputs.advantages * logp
    zero = torch.zeros((), device=logp.device)
    ppo_kl = masked_mean(inputs.old_log_probs - logp, inputs.response_mask).detach()
    return loss, {"pg_clipfrac": zero, "ppo_kl": ppo_kl}
