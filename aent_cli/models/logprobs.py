"""Per-token log-probs and entropies of sampled responses, computed from the final hidden states a
chunk of positions at a time, so the [tokens, V] logits of a micro-batch are never held at once:
each chunk applies the LM head, reduces to per-token numbers, and is recomputed in backward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from aent_cli.algos.entropy import DEFAULT_CHUNK_ROWS, clamped_entropy, full_entropy
from aent_cli.models.llama_family import shared_prefix_hidden

# Entropy passes take rows in chunks of about this many logits (the entropy module's default of 16
# rows is sized for ~150k-token vocabularies; a small vocabulary would pay its per-chunk overhead
# thousands of times).
_ENTROPY_CHUNK_ELEMENTS = 1 << 21
# When all the response logits of a forward are at most this many (128 MiB in fp32: 680 positions
# at V = 49,152, 220 at V = 151,936), they are kept for backward instead of recomputed: the
# recomputation repeats the LM head and the clamped entropy's selection, which costs more than
# this much memory is worth (bench_train_step.py); beyond it memory stays bounded by the chunk.
_UNCHECKPOINTED_ELEMENTS = 1 << 25


@dataclass
class SequenceBatch:
    """Prompt + response token ids, right-padded, with the response positions marked.

    `responses[b, j]` is the j-th generated token of row b, predicted from position
    `response_start[b] + j - 1` of `input_ids`. `group_index[b]` is the GRPO group of row b (verl's
    `index`): rows of one group share their prompt, and the update keeps groups whole.
    """
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    responses: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T] (1 on generated tokens, EOS included)
    response_start: torch.Tensor  # [B]
    group_index: torch.Tensor  # [B] int64

    def to(self, device) -> "SequenceBatch":
        return SequenceBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.responses,
                                                        self.response_mask, self.response_start, self.group_index)))

    def rows(self, index) -> "SequenceBatch":
        """A sub-batch, trimmed to its own longest sequence and response."""
        sub = SequenceBatch(self.input_ids[index], self.attention_mask[index], self.responses[index],
                            self.response_mask[index], self.response_start[index], self.group_index[index])
        width = int(sub.attention_mask.sum(-1).max())
        t_width = max(int(sub.response_mask.sum(-1).max()), 1)
        return SequenceBatch(sub.input_ids[:, :width], sub.attention_mask[:, :width],
                             sub.responses[:, :t_width], sub.response_mask[:, :t_width], sub.response_start,
                             sub.group_index)


def pack_sequences(prompt_ids: Sequence[List[int]], response_ids: Sequence[List[int]], pad_id: int,
                   group_index: Optional[Sequence[int]] = None) -> SequenceBatch:
    """Rows of prompt + response ids, right-padded with `pad_id`. `group_index` (one int per row)
    names each row's group; when None, rows with equal prompts form a group (for callers that hold
    plain lists: the trainer passes the rollout's groups)."""
    if group_index is None:
        first: Dict[tuple, int] = {}
        group_index = [first.setdefault(tuple(p), len(first)) for p in prompt_ids]
    if len(group_index) != len(prompt_ids):
        raise ValueError(f"{len(group_index)} group indices for {len(prompt_ids)} rows")
    lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    width, t_width = max(lengths), max(max(len(r) for r in response_ids), 1)
    batch = len(prompt_ids)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    responses = torch.full((batch, t_width), pad_id, dtype=torch.long)
    response_mask = torch.zeros((batch, t_width), dtype=torch.float32)
    for b, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        seq = list(p) + list(r)
        input_ids[b, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[b, :len(seq)] = 1
        if r:
            responses[b, :len(r)] = torch.tensor(r, dtype=torch.long)
            response_mask[b, :len(r)] = 1.0
    start = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)
    return SequenceBatch(input_ids, attention, responses, response_mask, start,
                         torch.tensor(list(group_index), dtype=torch.long))


def _chunk_stats(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor,
                 temperature: float, p: float, want_full: bool, want_clamped: bool, measured: dict):
    """Per-token log-prob (+ the entropies the loss differentiates) of one chunk of positions.

    Entropies wanted only as measurements go into `measured`, without grad and only on the first
    call: under activation checkpointing this function runs again in backward, and recomputing
    numbers nobody differentiates would be wasted work.
    """
    # the head is called as a module (not F.linear on its weight) so DeepSpeed ZeRO-3's hooks
    # gather its partitioned weight, in forward and in the checkpoint's recomputation
    logits = head(hidden).float() / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    # CPU: many rows per chunk when V is small (fewer Python iterations); GPU: the entropy module's
    # own device-sized default (13-row chunks at V = 151,936 were 7x slower on an H200)
    rows = None if logits.is_cuda else max(DEFAULT_CHUNK_ROWS, _ENTROPY_CHUNK_ELEMENTS // max(logits.shape[-1], 1))
    ent = full_entropy(logits, chunk_rows=rows) if want_full else None
    clamped = clamped_entropy(logits, p, chunk_rows=rows) if want_clamped else None
    if not measured.get("done"):
        with torch.no_grad():
            detached = logits.detach()
            measured["entropy"] = ent.detach() if ent is not None else full_entropy(detached, chunk_rows=rows)
            measured["clamped_entropy"] = (clamped.detach() if clamped is not None
                                           else clamped_entropy(detached, p, chunk_rows=rows))
        measured["done"] = True
    return logp, ent, clamped


def response_token_stats(
    model,
    batch: SequenceBatch,
    temperature: float = 1.0,
    p: float = 0.0,
    want_full: bool = True,
    want_clamped: bool = True,
    chunk: int = 1024,
    min_chunks: int = 0,
    lockstep: bool = False,
) -> Dict[str, torch.Tensor]:
    """{"logp", "entropy", "clamped_entropy"}: [B, T] fp32 tensors on the response positions (0 elsewhere).

    Entropies are of softmax(logits / temperature), the distribution the rollout sampled from, with
    the clamped one at percentage p. When grad is enabled, logp and the entropies flagged by
    want_full / want_clamped are differentiable; the others are detached measurements.
    `chunk` positions go through the LM head at a time (model.logit_chunk); `min_chunks` pads the
    loop with empty chunks. `lockstep` (DeepSpeed ZeRO-3, engine/backend.py): every rank must make
    the same module calls, so the forward runs through the model's modules (which gather partitioned
    weights), always checkpointed per chunk, and `min_chunks` is the count all ranks agreed on.
    Otherwise Llama-family models compute each distinct prompt once (`llama_family.shared_prefix_hidden`).
    """
    head = model.get_output_embeddings()
    bsz, t_width = batch.responses.shape
    valid = batch.response_mask.bool()
    flat_hidden = None if lockstep else shared_prefix_hidden(model, batch)
    if flat_hidden is None:
        backbone = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=positions, use_cache=False).last_hidden_state
        # hidden state that predicts response token j sits at position start + j - 1
        gather_at = (batch.response_start.unsqueeze(1) - 1 + torch.arange(t_width, device=hidden.device)).clamp(
            max=hidden.shape[1] - 1)
        flat_hidden = hidden.gather(1, gather_at.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))[valid]
    flat_targets = batch.responses[valid]

    outs = {k: [] for k in ("logp", "entropy", "clamped_entropy")}
    vocab = getattr(head, "out_features", None) or head.weight.shape[0]
    # not in lockstep: there every rank must call the head equally often, in backward too
    small = not lockstep and flat_hidden.shape[0] * vocab <= _UNCHECKPOINTED_ELEMENTS
    use_checkpoint = torch.is_grad_enabled() and not small
    for start in range(0, max(flat_hidden.shape[0], min_chunks * chunk), chunk):
        measured: dict = {}
        args = (flat_hidden[start:start + chunk], head, flat_targets[start:start + chunk],
                temperature, p, want_full, want_clamped, measured)
        logp, ent, clamped = checkpoint(_chunk_stats, *args, use_reentrant=False) if use_checkpoint else _chunk_stats(*args)
        outs["logp"].append(logp)
        outs["entropy"].append(ent if ent is not None else measured["entropy"])
        outs["clamped_entropy"].append(clamped if clamped is not None else measured["clamped_entropy"])

    stats = {}
    for key, parts in outs.items():
        dense = flat_hidden.new_zeros((bsz, t_width), dtype=torch.float32)
        if parts:
            dense = dense.masked_scatter(valid, torch.cat(parts))
        stats[key] = dense
    return stats
