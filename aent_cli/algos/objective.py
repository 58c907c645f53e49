"""Compose the training loss from the registered pieces: -(L_PO + lambda * bonus) (+ KL term)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from aent_cli.algos import aggregation, entropy_controls, kl, policy  # noqa: F401 - fill the registries
from aent_cli.algos.aggregation import masked_mean
from aent_cli.algos.policy import PolicyLossInput
from aent_cli.algos.registry import AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES, lookup

# algo.bonus -> the per-token entropy it weighs (its key in models.logprobs.response_token_stats);
# "none" adds no bonus. The algo.bonus choices are "none" and these keys.
BONUS_ENTROPY = {"full": "entropy", "clamped": "clamped_entropy"}


def compute_loss(
    algo: Any,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    coef: float,
    bonus_entropy: Optional[torch.Tensor] = None,
    ref_logp: Optional[torch.Tensor] = None,
    denom: Optional[float] = None,
    norm_length: Optional[int] = None,
    token_entropy: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """The scalar loss to minimise for one (micro-)batch and its detached stats.

    `algo` is the algo config section (policy_loss, loss_agg, bonus, clip epsilons, kl_coef, ...).
    All tensors are [B, T] over response tokens except `advantages`, which may be [B] (broadcast
    to every token of its response, as GRPO's trajectory-level advantage is). `bonus_entropy` is the
    per-token entropy the bonus uses (full or clamped, per `algo.bonus`); required unless bonus=none.
    `token_entropy` is the detached per-token full entropy, for policy losses that select tokens by
    entropy (policy_loss=high_entropy_mask).
    """
    if advantages.dim() == logp.dim() - 1:
        advantages = advantages.unsqueeze(-1).expand_as(logp)
    policy_fn = lookup(POLICY_LOSSES, algo.policy_loss, "policy loss")
    aggregate = lookup(AGGREGATIONS, algo.loss_agg, "loss aggregation")
    per_token, stats = policy_fn(PolicyLossInput(
        logp, old_logp, advantages, mask,
        clip_eps_low=algo.clip_eps_low, clip_eps_high=algo.clip_eps_high,
        dual_clip_c=getattr(algo, "dual_clip_c", None),
        algo=algo, token_entropy=token_entropy,
    ))
    loss = aggregate(per_token, mask, denom=denom, norm_length=norm_length)
    stats["pg_loss"] = loss.detach()
    if algo.bonus != "none":
        if bonus_entropy is None:
            raise ValueError(f"algo.bonus={algo.bonus} needs the per-token entropy")
        bonus = aggregate(bonus_entropy, mask, denom=denom, norm_length=norm_length)
        loss = loss - coef * bonus
        stats["entropy_bonus"] = bonus.detach()
    if algo.kl_coef > 0:
        if ref_logp is None:
            raise ValueError("algo.kl_coef > 0 needs reference log-probs")
        kl_tokens = lookup(KL_ESTIMATORS, algo.kl_estimator, "KL estimator")(logp, ref_logp)
        loss = loss + algo.kl_coef * aggregate(kl_tokens, mask, denom=denom, norm_length=norm_length)
        stats["kl_ref"] = masked_mean(kl_tokens, mask).detach()
    return loss, stats
