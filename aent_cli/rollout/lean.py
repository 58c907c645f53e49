"""A lean sampling loop for Llama-family decoders (Qwen2, Llama), used by the `hf` backend.

On a small model most of a `generate` step is Python: module calls, mask building, cache objects,
logits-processor plumbing. This runs the same computation as the transformers modules (RMSNorm,
rotary embeddings, grouped-query SDPA, SwiGLU) as plain tensor ops on the model's own parameters,
over a preallocated KV cache, and samples exactly as `generate` does: temperature, then top-k, then
top-p on fp32 logits, one `torch.multinomial` over the whole batch per step (finished rows get the
pad token, as in `generate`), stopping when every row has emitted a stop id (`rollout/stops.py`: EOS, the
generation config's end ids, the chat template's end of turn) or `max_new_tokens` are out.
So a given RNG state draws the same tokens as `generate` on CPU, up to float rounding of the logits
(elsewhere the same distribution).

Each distinct prompt is prefilled once and its cache copied to its n samples. Finished rows leave
the cache in batches (when at most `_COMPACT_AT` of the held rows still generate, one copy of the
used positions only); until then they are fed the pad token and their draws discarded, and rows
out of the cache get placeholder logits (a row's draw does not depend on the other rows', so the
samples are unchanged). The cache grows by doubling from `_FIRST_ROOM` new tokens, and decoding
stops as soon as every row is done. Models this does not cover (`lean_supported` is False) go
through `generate` instead.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from aent_cli.models.llama_family import decoder_layers, lean_supported, mlp, qkv, rms_norm, rope_table, rotate

__all__ = ["LeanDecoder", "filter_logits", "lean_sample", "lean_supported"]


def filter_logits(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """fp32 logits -> the scores `generate` samples from (its temperature, top-k and top-p warpers,
    in its order; removed tokens are -inf)."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k > 0:
        kth = torch.topk(scores, min(top_k, scores.shape[-1]))[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        remove = sorted_scores.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False  # keep at least the most likely token
        scores = scores.masked_fill(remove.scatter(1, order, remove), -float("inf"))
    return scores


class _Cache:
    """Keys and values of every layer for `rows` sequences of up to `length` positions."""

    def __init__(self, layers: int, rows: int, kv_heads: int, length: int, head_dim: int, like: torch.Tensor):
        shape = (rows, kv_heads, length, head_dim)
        self.k = [like.new_zeros(shape) for _ in range(layers)]
        self.v = [like.new_zeros(shape) for _ in range(layers)]

    @property
    def length(self) -> int:
        return self.k[0].shape[2]

    def resize(self, rows: Optional[torch.Tensor], used: int, length: int, repeat: int = 1) -> None:
        """Keep the cached `rows` (all when None), each `repeat` times in a row, and their positions
        [0, used), in tensors of `length` positions: a copy of what is used, not of the whole cache."""
        def move(t: torch.Tensor) -> torch.Tensor:
            src = t[:, :, :used] if rows is None else t[:, :, :used].index_select(0, rows)
            if repeat > 1:
                src = src.repeat_interleave(repeat, dim=0)
            out = t.new_empty((src.shape[0], t.shape[1], length, t.shape[3]))
            out[:, :, :used] = src
            return out
        self.k = [move(k) for k in self.k]
        self.v = [move(v) for v in self.v]


# Rows that finish stay in the cache (fed the pad token, their draws discarded) until no more than
# this share of the held rows is still generating; then the cache is compacted in one copy. Each
# copy then removes at least a quarter of the rows, so a batch pays O(log rows) copies, not one per
# finishing row, and at most a third of the rows computed are finished ones.
_COMPACT_AT = 0.75
# The cache starts with room for this many new tokens and doubles when full (up to max_new_tokens),
# so short rollouts under a long limit do not allocate (or copy) the whole limit.
_FIRST_ROOM = 64

# Below this many parameters a decode step is dominated by per-op overhead, so the q/k/v and the
# gate/up projections are concatenated once per call and run as one matmul each (a weight copy
# that a large model would not want).
_FUSE_BELOW_PARAMS = 50_000_000


def _cat(parts: List[Optional[torch.Tensor]]) -> Optional[torch.Tensor]:
    return None if any(t is None for t in parts) else torch.cat(parts)


class LeanDecoder:
    """Forward passes of a supported model over a `_Cache`."""

    def __init__(self, model) -> None:
        self.model = model
        cfg = model.config
        self.layers = model.model.layers
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = self.layers[0].self_attn.head_dim
        self.head = model.get_output_embeddings()
        self.fused = None
        if sum(p.numel() for p in model.parameters()) < _FUSE_BELOW_PARAMS:
            self.fused = [(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
                           _cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]),
                           torch.cat([m.gate_proj.weight, m.up_proj.weight]), _cat([m.gate_proj.bias, m.up_proj.bias]))
                          for a, m in ((layer.self_attn, layer.mlp) for layer in self.layers)]

    def _qkv(self, i: int, layer, x: torch.Tensor):
        if self.fused is None:
            return qkv(layer.self_attn, x)
        w, b = self.fused[i][:2]
        split = F.linear(x, w, b).view(*x.shape[:-1], -1, self.head_dim)
        return split.split([self.heads, self.kv_heads, self.kv_heads], dim=-2)

    def _mlp(self, i: int, layer, x: torch.Tensor) -> torch.Tensor:
        if self.fused is None:
            return mlp(layer, x)
        gate, up = F.linear(x, *self.fused[i][2:]).chunk(2, dim=-1)
        down = layer.mlp.down_proj
        return F.linear(F.silu(gate) * up, down.weight, down.bias)

    def rope_table(self, length: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
        return rope_table(self.model, length, device)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, cache: _Cache, at: int, mask: torch.Tensor,
                rope: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """fp32 logits of the last position of `ids` [B, S], written into the cache at [at, at + S);
        `mask` [B, 1, S, at + S] says which cached keys each query sees."""
        cos, sin = rope[0][positions].unsqueeze(2), rope[1][positions].unsqueeze(2)  # [B, S, 1, head_dim]
        h = F.embedding(ids, self.model.model.embed_tokens.weight)
        gqa = self.heads != self.kv_heads
        end = at + ids.shape[1]

        def attention(i: int, attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            cache.k[i][:, :, at:end] = k.transpose(1, 2)  # q, k, v: [B, S, heads, head_dim]
            cache.v[i][:, :, at:end] = v.transpose(1, 2)
            out = F.scaled_dot_product_attention(q.transpose(1, 2), cache.k[i][:, :, :end], cache.v[i][:, :, :end],
                                                 attn_mask=mask, scale=attn.scaling, enable_gqa=gqa)
            return out.transpose(1, 2).flatten(2)

        h = decoder_layers(self.model, h, lambda q, k: (rotate(q, cos, sin), rotate(k, cos, sin)), attention,
                           self._qkv, self._mlp)
        last = rms_norm(h[:, -1], self.model.model.norm)
        return F.linear(last, self.head.weight, self.head.bias).to(torch.float32)


def _grown(length: int, width: int, total: int) -> int:
    """The next cache length: twice the room for new tokens, at most `total` positions."""
    return min(total, width + 2 * max(length - width, 1))


@torch.no_grad()
def lean_sample(model, ids: torch.Tensor, attention: torch.Tensor, n: int, *, temperature: float, top_k: int,
                top_p: float, max_new_tokens: int, stop_ids: Sequence[int],
                pad_id: int, on_tokens: Optional[Callable[[int], None]] = None) -> Tuple[List[List[int]], List[bool]]:
    """`n` samples for each left-padded prompt row of `ids` [P, L]: (generated ids per sample, ending
    with the stop id that ended it when finished; finished flags), samples of prompt i at rows
    i*n .. i*n + n - 1. A row finishes at the first of `stop_ids` it samples. `on_tokens(count)`,
    if given, is called after every decoding step with the number of tokens it generated (progress)."""
    prompts, width = ids.shape
    if max_new_tokens < 1 or prompts == 0:
        return [[] for _ in range(prompts * n)], [False] * (prompts * n)
    dec = LeanDecoder(model)
    rows, total = prompts * n, width + max_new_tokens
    device = ids.device
    stops = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    valid = attention.bool()
    rope = dec.rope_table(total, device)
    cache = _Cache(len(dec.layers), prompts, dec.kv_heads, width, dec.head_dim, dec.head.weight)

    # Prefill each distinct prompt once; a pad query also sees itself, so no row of the mask is
    # empty (an empty row would make NaN keys and values that poison later steps).
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    prefill_mask = (causal & valid[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)
    positions = (attention.long().cumsum(-1) - 1).clamp(min=0)
    logits = dec.forward(ids, positions, cache, 0, prefill_mask.unsqueeze(1), rope)
    cache.resize(None, width, width + min(max_new_tokens, _FIRST_ROOM), repeat=n)
    logits = logits.repeat_interleave(n, dim=0)
    sees = torch.ones(rows, 1, 1, total, dtype=torch.bool, device=device)
    sees[:, 0, 0, :width] = valid.repeat_interleave(n, dim=0)
    next_pos = positions[:, -1:].repeat_interleave(n, dim=0) + 1

    tokens = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    unfinished = torch.ones(rows, dtype=torch.bool, device=device)
    live = None  # the sample rows the cache holds, once some have been dropped (None: all rows)
    steps = 0
    for t in range(max_new_tokens):
        if temperature == 0:
            chosen = logits.argmax(dim=-1)
        else:
            scores = filter_logits(logits, temperature, top_k, top_p)
            chosen = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        chosen = torch.where(unfinished, chosen, pad_id)
        tokens[:, t] = chosen
        steps = t + 1
        if on_tokens is not None:
            on_tokens(int(unfinished.sum()))
        unfinished &= ~torch.isin(chosen, stops)
        if t + 1 == max_new_tokens or not bool(unfinished.any()):
            break
        still = unfinished if live is None else unfinished[live]
        held, generating = still.numel(), int(still.sum())
        used = width + t  # positions cached so far
        full = used + 1 > cache.length
        if generating <= _COMPACT_AT * held or (full and generating < held):  # drop the finished rows
            keep = still.nonzero().squeeze(1)
            cache.resize(keep, used, max(cache.length, used + 1) if not full else _grown(cache.length, width, total))
            sees, next_pos = sees[keep], next_pos[keep]
            live = keep if live is None else live[keep]
        elif full:
            cache.resize(None, used, _grown(cache.length, width, total))
        fed = chosen if live is None else chosen[live]
        step_logits = dec.forward(fed.unsqueeze(1), next_pos + t, cache, width + t, sees[..., :width + t + 1], rope)
        if live is None:
            logits = step_logits
        else:  # rows out of the cache sample from a placeholder (uniform); finished rows get the pad token anyway
            logits = step_logits.new_zeros(rows, step_logits.shape[-1]).index_copy_(0, live, step_logits)

    finished = ~unfinished
    is_stop = torch.isin(tokens[:, :steps], stops)
    lengths = torch.where(finished, is_stop.int().argmax(dim=-1) + 1, steps).tolist()
    out = tokens[:, :steps].tolist()
    return [row[:length] for row, length in zip(out, lengths)], finished.tolist()

