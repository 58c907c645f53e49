"""Step 3 of Algorithm 1: optimise the batch surrogate of L_PO + lambda * bonus over mini-epochs,
mini-batches and micro-batches (gradient accumulation that sums to the mini-batch's loss).

`optimise(model, backend, algo, batch, entropy_coef, settings)`: the step's `StepBatch` (sequences
with their group index, advantages, pi_old's and the reference's log-probs), the algo config
section, lambda as a number, and the `UpdateSettings` read from the config in one place; it returns
an `UpdateResult`.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from aent_cli.algos.objective import BONUS_ENTROPY, compute_loss
from aent_cli.engine.backend import TrainingBackend
from aent_cli.engine.collectives import all_reduce_max, global_denominator, mean_over_ranks
from aent_cli.engine.distributed import DistEnv
from aent_cli.models.logprobs import SequenceBatch, response_token_stats

TokenStats = Dict[str, torch.Tensor]  # "logp", "entropy", "clamped_entropy": [B, T] fp32 on response positions


@dataclass
class StepBatch:
    """One step's training data (this rank's share), on the training device.

    `advantages`: [B] (one per response, GRPO) or [B, T]. `old`: pi_old's per-token stats measured
    before the update (`measure`); None when the step makes one update, whose own forward is pi_old.
    `ref_logp`: [B, T] log-probs of the reference policy (needed when algo.kl_coef > 0).
    """
    sequences: SequenceBatch
    advantages: torch.Tensor
    old: Optional[TokenStats] = None
    ref_logp: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class UpdateSettings:
    """How the update runs: the sampling temperature the log-probs and entropies use, positions per
    LM-head chunk (model.logit_chunk), groups per mini-batch (trainer.mini_batch_size), micro-batch
    bounds (rows; tokens, 0: none), mini-epochs, the gradient-norm clip and the response-length
    norm of loss_agg=seq_mean_token_sum_norm (rollout.max_new_tokens)."""
    temperature: float
    logit_chunk: int
    mini_batch_groups: int
    micro_batch_size: int
    max_response_length: int
    micro_batch_tokens: int = 0
    ppo_epochs: int = 1
    grad_clip: float = 1.0

    @classmethod
    def from_config(cls, cfg, world_size: int = 1) -> "UpdateSettings":
        """`trainer.mini_batch_size` counts groups over all ranks; each rank holds 1/world_size of
        every mini-batch (setup checks it divides), so an optimiser step sees the same groups as one
        process's would."""
        t = cfg.trainer
        return cls(temperature=cfg.rollout.temperature, logit_chunk=cfg.model.logit_chunk,
                   mini_batch_groups=t.mini_batch_size // world_size, micro_batch_size=t.micro_batch_size,
                   max_response_length=cfg.rollout.max_new_tokens, micro_batch_tokens=t.micro_batch_tokens,
                   ppo_epochs=t.ppo_epochs, grad_clip=t.grad_clip)


@dataclass
class UpdateResult:
    """`stats`: means over optimiser steps and ranks (pg_loss, entropy_bonus, grad_norm, pg_clipfrac,
    ...; logged as actor/<key>). `measured`: with no `StepBatch.old`, pi_old's per-token stats taken
    from the update's own forward; otherwise None."""
    stats: Dict[str, float]
    measured: Optional[TokenStats] = None


def _needs(algo) -> Dict[str, bool]:
    return {
        "want_full": algo.bonus == "full" or algo.policy_loss == "high_entropy_mask",
        "want_clamped": algo.bonus == "clamped",
    }


_DENOMINATED = ("pg_loss", "entropy_bonus")  # compute_loss stats aggregated with `denom`


def _denominator(algo, mask: torch.Tensor) -> float:
    return float(mask.sum()) if algo.loss_agg == "token_mean" else float(mask.shape[0])


def group_rows(group_index: torch.Tensor) -> List[torch.Tensor]:
    """The rows of each group, groups in order of first appearance, rows in order."""
    rows: Dict[int, List[int]] = {}
    for row, group in enumerate(group_index.tolist()):
        rows.setdefault(group, []).append(row)
    return [torch.tensor(r, dtype=torch.long) for r in rows.values()]


def micro_batches(batch: SequenceBatch, rows: torch.Tensor, max_rows: int, max_tokens: int = 0,
                  env: Optional[DistEnv] = None) -> List[torch.Tensor]:
    """`rows` split, in order, into micro-batches of at most `max_rows` sequences and, when
    `max_tokens` > 0, at most `max_tokens` tokens through the model: each group's prompt once (the
    training forward shares it) plus every response token (a single longer row gets its own
    micro-batch). With several ranks (`env`), every rank gets as many micro-batches as the rank
    that needs most (the most tokens are split further): ZeRO-3 forwards are collective."""
    starts = batch.response_start[rows].tolist()
    lengths = batch.response_mask[rows].sum(-1).long().tolist()
    group_of = batch.group_index[rows].tolist()
    parts: List[List[int]] = []
    seen: set = set()
    tokens = 0
    for i, (start, length, group) in enumerate(zip(starts, lengths, group_of)):
        cost = length + (0 if group in seen else start)
        if parts and len(parts[-1]) < max_rows and (not max_tokens or tokens + cost <= max_tokens):
            parts[-1].append(i)
            tokens += cost
            seen.add(group)
            continue
        parts.append([i])
        seen, tokens = {group}, start + length
    if max_tokens and env is not None and env.active:
        wanted = all_reduce_max(len(parts), env)
        while len(parts) < wanted:  # halve the micro-batch with the most tokens
            big = max((g for g in parts if len(g) > 1), key=lambda g: sum(lengths[i] for i in g))
            at = parts.index(big)
            parts[at:at + 1] = [big[:len(big) // 2], big[len(big) // 2:]]
    return [rows[torch.tensor(g, dtype=torch.long)] for g in parts]


def _forward(model, sub: SequenceBatch, settings: UpdateSettings, p: float, backend: Optional[TrainingBackend],
             **needs: bool) -> TokenStats:
    """response_token_stats of one micro-batch, told of the backend's lockstep (engine/backend.py)."""
    min_chunks = 0 if backend is None else backend.prepare_forward(int(sub.response_mask.sum()), settings.logit_chunk)
    return response_token_stats(model, sub, settings.temperature, p, chunk=settings.logit_chunk,
                                min_chunks=min_chunks, lockstep=backend is not None and backend.lockstep, **needs)


@torch.no_grad()
def measure(model, batch: SequenceBatch, settings: UpdateSettings, p: float,
            backend: Optional[TrainingBackend] = None) -> TokenStats:
    """Log-probs and both entropies (clamped at `p`) of `model` on the sampled positions, no grad.
    `backend`: the training backend when `model` is the one it trains (told of each forward)."""
    parts = defaultdict(list)
    env = backend.env if backend is not None else None
    rows = torch.arange(batch.input_ids.shape[0])
    for micro in micro_batches(batch, rows, settings.micro_batch_size, settings.micro_batch_tokens, env):
        stats = _forward(model, batch.rows(micro), settings, p, backend)
        width = batch.responses.shape[1]
        for key, value in stats.items():
            parts[key].append(torch.nn.functional.pad(value, (0, width - value.shape[1])))
    return {key: torch.cat(values) for key, values in parts.items()}


def optimise(model, backend: TrainingBackend, algo, batch: StepBatch, entropy_coef: float,
             settings: UpdateSettings, generator: Optional[torch.Generator] = None) -> UpdateResult:
    """Run the updates of one step: `settings.ppo_epochs` passes over mini-batches of
    `settings.mini_batch_groups` whole groups (shuffled by `generator` when there are several
    epochs), one optimiser step each, with `entropy_coef` (lambda) weighting the bonus.

    With several ranks, loss denominators are global and stats are averaged over ranks, so the
    update equals one process's on the whole batch. Micro-batches hold at most
    `settings.micro_batch_size` sequences and `settings.micro_batch_tokens` tokens (`micro_batches`);
    the loss carries the mini-batch's denominator, so how the mini-batch is split does not change it."""
    seqs, old = batch.sequences, batch.old
    groups = group_rows(seqs.group_index)
    needs = _needs(algo)
    single_pass = old is None  # one mini-batch, one epoch: pi_old == pi_theta, reuse this forward
    totals: Dict[str, List[float]] = defaultdict(list)
    measured = defaultdict(list)

    model.train()
    for _ in range(settings.ppo_epochs):
        # shuffle whole groups, so group statistics stay inside a mini-batch
        order = (torch.randperm(len(groups), generator=generator) if settings.ppo_epochs > 1
                 else torch.arange(len(groups))).tolist()
        for first in range(0, len(groups), settings.mini_batch_groups):
            mb_rows = torch.cat([groups[g] for g in order[first:first + settings.mini_batch_groups]])
            denom = global_denominator(_denominator(algo, seqs.response_mask[mb_rows]), backend.env)
            backend.zero_grad()
            step_stats = defaultdict(float)
            micros = micro_batches(seqs, mb_rows, settings.micro_batch_size, settings.micro_batch_tokens,
                                   backend.env)
            for index, rows in enumerate(micros):
                sub = seqs.rows(rows)
                width = sub.responses.shape[1]
                stats = _forward(model, sub, settings, algo.p, backend, **needs)
                logp = stats["logp"]
                old_logp = logp.detach() if single_pass else old["logp"][rows, :width]
                bonus = stats[BONUS_ENTROPY[algo.bonus]] if algo.bonus in BONUS_ENTROPY else None
                loss, loss_stats = compute_loss(
                    algo, logp, old_logp, batch.advantages[rows], sub.response_mask, entropy_coef,
                    bonus_entropy=bonus,
                    ref_logp=None if batch.ref_logp is None else batch.ref_logp[rows, :width],
                    denom=denom, norm_length=settings.max_response_length,
                    token_entropy=stats["entropy"].detach(),
                )
                backend.backward(loss, last_micro=index == len(micros) - 1)
                share = len(rows) / len(mb_rows)
                for key, value in loss_stats.items():
                    # loss terms already carry the mini-batch denominator: they add up; the other
                    # stats are micro-batch means, weighted by the micro-batch's share
                    step_stats[key] += float(value) * (1.0 if key in _DENOMINATED else share)
                if single_pass:
                    full_width = seqs.responses.shape[1]
                    for key in ("logp", "entropy", "clamped_entropy"):
                        measured[key].append(torch.nn.functional.pad(stats[key].detach(), (0, full_width - width)))
            grad_norm = backend.step(settings.grad_clip)
            step_stats["grad_norm"] = float(grad_norm)
            for key, value in step_stats.items():
                totals[key].append(value)
    out = mean_over_ranks({key: sum(values) / len(values) for key, values in totals.items()}, backend.env)
    return UpdateResult(out, {key: torch.cat(values) for key, values in measured.items()} if single_pass else None)
