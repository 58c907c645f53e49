"""Step 3 of Algorithm 1: optimise the batch surrogate of L_PO + lambda * bonus over mini-epochs,
mini-batches and micro-batches (gradient accumulation that sums to the mini-batch's loss)."""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional

import torch

from aent_cli.algos.objective import compute_loss
from aent_cli.engine.distributed import all_reduce_max, as_backend, global_denominator, mean_over_ranks
from aent_cli.models.logprobs import SequenceBatch, response_token_stats


def _needs(algo) -> Dict[str, bool]:
    return {
        "want_full": algo.bonus == "full" or algo.policy_loss == "high_entropy_mask",
        "want_clamped": algo.bonus == "clamped",
    }


_DENOMINATED = ("pg_loss", "entropy_bonus")  # compute_loss stats aggregated with `denom`


def _denominator(algo, mask: torch.Tensor) -> float:
    return float(mask.sum()) if algo.loss_agg == "token_mean" else float(mask.shape[0])


def micro_batches(batch: SequenceBatch, rows: torch.Tensor, max_rows: int, max_tokens: int = 0,
                  env=None) -> List[torch.Tensor]:
    """`rows` split, in order, into micro-batches of at most `max_rows` sequences and, when
    `max_tokens` > 0, at most `max_tokens` tokens through the model: each distinct prompt once (the
    training forward shares it) plus every response token (a single longer row gets its own
    micro-batch). With several ranks (`env`), every rank gets as many micro-batches as the rank
    that needs most (the most tokens are split further): ZeRO-3 forwards are collective."""
    starts = batch.response_start[rows].tolist()
    lengths = batch.response_mask[rows].sum(-1).long().tolist()
    prompt_of = [tuple(batch.input_ids[r, :s].tolist()) for r, s in zip(rows.tolist(), starts)]
    groups: List[List[int]] = []
    seen: set = set()
    tokens = 0
    for i, (start, length, prompt) in enumerate(zip(starts, lengths, prompt_of)):
        cost = length + (0 if prompt in seen else start)
        if groups and len(groups[-1]) < max_rows and (not max_tokens or tokens + cost <= max_tokens):
            groups[-1].append(i)
            tokens += cost
            seen.add(prompt)
            continue
        groups.append([i])
        seen, tokens = {prompt}, start + length
    if max_tokens and env is not None and env.active:
        wanted = all_reduce_max(len(groups), env)
        while len(groups) < wanted:  # halve the micro-batch with the most tokens
            big = max((g for g in groups if len(g) > 1), key=lambda g: sum(lengths[i] for i in g))
            at = groups.index(big)
            groups[at:at + 1] = [big[:len(big) // 2], big[len(big) // 2:]]
    return [rows[torch.tensor(g, dtype=torch.long)] for g in groups]


@torch.no_grad()
def measure(model, batch: SequenceBatch, temperature: float, p: float, chunk: int, micro: int,
            backend=None, micro_tokens: int = 0) -> Dict[str, torch.Tensor]:
    """Log-probs and both entropies of the sampling policy on the sampled positions (no grad).
    `backend`: the training backend when `model` is the one it trains (told of each forward).
    Micro-batches: at most `micro` sequences and `micro_tokens` tokens (0: no token bound)."""
    parts = defaultdict(list)
    env = backend.env if backend is not None else None
    for rows in micro_batches(batch, torch.arange(batch.input_ids.shape[0]), micro, micro_tokens, env):
        sub = batch.rows(rows)
        min_chunks = backend.prepare_forward(int(sub.response_mask.sum()), chunk) if backend is not None else 0
        stats = response_token_stats(model, sub, temperature, p, chunk=chunk, min_chunks=min_chunks)
        width = batch.responses.shape[1]
        for key, value in stats.items():
            parts[key].append(torch.nn.functional.pad(value, (0, width - value.shape[1])))
    return {key: torch.cat(values) for key, values in parts.items()}


def optimise(
    model,
    optimizer,
    algo,
    batch: SequenceBatch,
    advantages: torch.Tensor,
    old: Optional[Dict[str, torch.Tensor]],
    ref_logp: Optional[torch.Tensor],
    coef: float,
    *,
    temperature: float,
    chunk: int,
    group_size: int,
    mini_batch_queries: int,
    micro_batch_size: int,
    ppo_epochs: int,
    grad_clip: float,
    max_response_length: int,
    generator: Optional[torch.Generator] = None,
    micro_batch_tokens: int = 0,
) -> Dict[str, float]:
    """Run the updates; returns mean stats over optimiser steps (plus, when `old` is None, the
    on-policy measurements taken from the single update's own forward pass).

    `optimizer` is a torch optimiser or a training backend (engine/distributed.py); with several
    ranks, loss denominators are global and stats are averaged over ranks, so the update equals
    one process's on the whole batch. Micro-batches hold at most `micro_batch_size` sequences and,
    when `micro_batch_tokens` > 0, at most that many tokens (`micro_batches`); the loss carries the
    mini-batch's denominator, so how the mini-batch is split does not change it."""
    backend = as_backend(model, optimizer)
    n_seqs = batch.input_ids.shape[0]
    seqs_per_mini = mini_batch_queries * group_size
    needs = _needs(algo)
    single_pass = old is None  # one mini-batch, one epoch: pi_old == pi_theta, reuse this forward
    totals: Dict[str, List[float]] = defaultdict(list)
    measured = defaultdict(list)

    model.train()
    for _ in range(ppo_epochs):
        # shuffle whole groups, so group statistics stay inside a mini-batch
        order = torch.randperm(n_seqs // group_size, generator=generator) if ppo_epochs > 1 else torch.arange(
            n_seqs // group_size)
        seq_order = (order.unsqueeze(1) * group_size + torch.arange(group_size)).reshape(-1)
        for mb_start in range(0, n_seqs, seqs_per_mini):
            mb_rows = seq_order[mb_start:mb_start + seqs_per_mini]
            denom = global_denominator(_denominator(algo, batch.response_mask[mb_rows]), backend.env)
            backend.zero_grad()
            step_stats = defaultdict(float)
            micros = micro_batches(batch, mb_rows, micro_batch_size, micro_batch_tokens, backend.env)
            for index, rows in enumerate(micros):
                sub = batch.rows(rows)
                width = sub.responses.shape[1]
                min_chunks = backend.prepare_forward(int(sub.response_mask.sum()), chunk)
                stats = response_token_stats(model, sub, temperature, algo.p, chunk=chunk, min_chunks=min_chunks,
                                             **needs)
                logp = stats["logp"]
                old_logp = logp.detach() if single_pass else old["logp"][rows, :width]
                bonus = {"full": stats["entropy"], "clamped": stats["clamped_entropy"]}.get(algo.bonus)
                loss, loss_stats = compute_loss(
                    algo, logp, old_logp, advantages[rows], sub.response_mask, coef,
                    bonus_entropy=bonus,
                    ref_logp=None if ref_logp is None else ref_logp[rows, :width],
                    denom=denom, norm_length=max_response_length,
                    token_entropy=stats["entropy"].detach(),
                )
                backend.backward(loss, last_micro=index == len(micros) - 1)
                share = len(rows) / len(mb_rows)
                for key, value in loss_stats.items():
                    # loss terms already carry the mini-batch denominator: they add up; the other
                    # stats are micro-batch means, weighted by the micro-batch's share
                    step_stats[key] += float(value) * (1.0 if key in _DENOMINATED else share)
                if single_pass:
                    full_width = batch.responses.shape[1]
                    for key in ("logp", "entropy", "clamped_entropy"):
                        measured[key].append(torch.nn.functional.pad(stats[key].detach(), (0, full_width - width)))
            grad_norm = backend.step(grad_clip)
            step_stats["grad_norm"] = float(grad_norm)
            for key, value in step_stats.items():
                totals[key].append(value)
    out = mean_over_ranks({key: sum(values) / len(values) for key, values in totals.items()}, backend.env)
    if single_pass:
        out["_measured"] = {key: torch.cat(values) for key, values in measured.items()}
    return out
