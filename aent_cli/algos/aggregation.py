"""Reduce a [B, T] per-token quantity over response tokens to one scalar.

`denom` lets gradient accumulation split a mini-batch into micro-batches and still sum to the same
loss as one pass over the whole mini-batch: pass the mini-batch's token count (token_mean) or
sequence count (the seq_* modes).
"""
from __future__ import annotations

from typing import Optional

import torch

from aent_cli.algos.registry import AGGREGATIONS, register


@register(AGGREGATIONS, "token_mean")
def token_mean(values: torch.Tensor, mask: torch.Tensor, denom: Optional[float] = None, **_) -> torch.Tensor:
    mask = mask.to(values.dtype)
    total = mask.sum() if denom is None else denom
    return (values * mask).sum() / max(float(total), 1.0)


@register(AGGREGATIONS, "seq_mean_token_mean")
def seq_mean_token_mean(values: torch.Tensor, mask: torch.Tensor, denom: Optional[float] = None, **_) -> torch.Tensor:
    mask = mask.to(values.dtype)
    per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    n_seqs = per_seq.shape[0] if denom is None else denom
    return per_seq.sum() / max(float(n_seqs), 1.0)


@register(AGGREGATIONS, "seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(
    values: torch.Tensor, mask: torch.Tensor, denom: Optional[float] = None, norm_length: Optional[int] = None, **_
) -> torch.Tensor:
    """Dr. GRPO: token sums divided by one constant length (the max response length), then seq-mean."""
    mask = mask.to(values.dtype)
    length = norm_length or values.shape[-1]
    per_seq = (values * mask).sum(-1) / float(length)
    n_seqs = per_seq.shape[0] if denom is None else denom
    return per_seq.sum() / max(float(n_seqs), 1.0)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)
