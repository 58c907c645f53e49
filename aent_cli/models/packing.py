"""Where every token of a GRPO batch goes in the padding-free training forward.

A batch of prompt + response rows, in which the rows of a group (`group_index`) share one prompt, becomes one flat
sequence of N token positions with no padding: each distinct prompt once, then each row's response
tokens that are inputs (all but its last: that one predicts nothing the loss scores). Linear layers,
norms and the MLP run on that [N, hidden] tensor, so their cost is linear in real tokens however
lengths vary. Attention runs per *segment*: a prompt attends causally to itself; a row's response
inputs attend to their prompt's positions and causally to their own. Segments of similar size are
grouped into buckets (one SDPA call each, padded only to the bucket's largest segment), and the flat
order follows the buckets, so each bucket's queries are one contiguous stretch of the flat sequence.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch

# A bucket may cost up to this many times its segments' own attention area (queries x keys) once
# padded to its largest segment; more and a new bucket (one more SDPA call per layer) is cheaper.
BUCKET_SLACK = 1.3


@dataclass
class Bucket:
    """One SDPA call: `count` segments padded to `q_width` queries and `k_width` keys.

    Queries are flat positions [start, start + q_total); `q_index` [count * q_width] picks each
    segment's queries out of them (None when no segment is padded: a plain view), `valid` the padded
    query slots that are real (None likewise). `k_index` [count * k_width] gathers keys and values
    (padding points at position 0 and is masked out); `mask` [count, 1, q_width, k_width] is True
    where a query may attend; None means plain causal (every segment a full, unpadded prompt).
    """
    start: int
    q_total: int
    count: int
    q_width: int
    k_width: int
    q_index: torch.Tensor | None
    valid: torch.Tensor | None
    k_index: torch.Tensor
    mask: torch.Tensor | None


@dataclass
class PackedLayout:
    token_ids: torch.Tensor  # [N] input ids in flat order
    positions: torch.Tensor  # [N] rotary position of each flat token (its index in its own sequence)
    scored: torch.Tensor  # [n_scored] flat position whose hidden state predicts each response token,
    # in `response_mask` (row-major) order
    buckets: List[Bucket]


def distinct_prompts(batch) -> Tuple[List[List[int]], List[int]]:
    """The prompts (token lists) of a batch's groups (`batch.group_index`), in order of first
    appearance, and for each row the ordinal of its group. Rows of a group share their prompt."""
    starts = batch.response_start.tolist()
    ordinal: Dict[int, int] = {}
    of_row = [ordinal.setdefault(g, len(ordinal)) for g in batch.group_index.tolist()]
    first_row: Dict[int, int] = {}
    for b, k in enumerate(of_row):
        first_row.setdefault(k, b)
        if starts[b] != starts[first_row[k]]:
            raise ValueError(f"rows {first_row[k]} and {b} share group {batch.group_index[b]} but not a prompt length")
    return [batch.input_ids[first_row[k], :starts[first_row[k]]].tolist() for k in range(len(ordinal))], of_row


def _buckets(segments: List[Tuple[int, int]]) -> List[List[int]]:
    """Segment indices grouped into buckets; `segments` are (queries, keys) sizes."""
    order = sorted(range(len(segments)), key=lambda i: (-segments[i][1], -segments[i][0]))
    groups: List[List[int]] = []
    q_w = k_w = area = 0
    for i in order:
        q, k = segments[i]
        if groups:
            padded = (len(groups[-1]) + 1) * max(q_w, q) * k_w
            if padded <= BUCKET_SLACK * (area + q * k):
                groups[-1].append(i)
                q_w, area = max(q_w, q), area + q * k
                continue
        groups.append([i])
        q_w, k_w, area = q, k, q * k
    return groups


def pack_layout(batch) -> PackedLayout:
    """The flat layout of a `SequenceBatch` (right-padded rows, `response_start` = prompt length)."""
    device = batch.input_ids.device
    starts = batch.response_start.tolist()
    lengths = batch.response_mask.sum(-1).long().tolist()
    prompts, of_row = distinct_prompts(batch)
    inputs = [max(n - 1, 0) for n in lengths]  # response tokens fed to the model, per row
    # segment s < len(prompts): prompt s; segment len(prompts) + b: the response inputs of row b
    sizes = [(len(p), len(p)) for p in prompts] + [(n, len(prompts[of_row[b]]) + n) for b, n in enumerate(inputs)]
    live = [s for s, (q, _) in enumerate(sizes) if q > 0]
    groups = [[live[i] for i in g] for g in _buckets([sizes[s] for s in live])]

    offset: Dict[int, int] = {}  # segment -> flat position of its first query
    cursor = 0
    for group in groups:
        for s in group:
            offset[s] = cursor
            cursor += sizes[s][0]
    n_tokens = cursor

    ids: List[List[int]] = [[] for _ in sizes]
    positions: List[range] = [range(0) for _ in sizes]
    responses = batch.responses.tolist()
    for s, prompt in enumerate(prompts):
        ids[s], positions[s] = prompt, range(len(prompt))
    for b, n in enumerate(inputs):
        s = len(prompts) + b
        ids[s], positions[s] = responses[b][:n], range(starts[b], starts[b] + n)
    flat_order = [s for group in groups for s in group]
    token_ids = torch.tensor([t for s in flat_order for t in ids[s]], dtype=torch.long, device=device)
    flat_positions = torch.tensor([p for s in flat_order for p in positions[s]], dtype=torch.long, device=device)

    scored: List[int] = []
    for b, n in enumerate(lengths):
        prompt = of_row[b]
        if n:
            scored.append(offset[prompt] + len(prompts[prompt]) - 1)  # the prompt's last position predicts token 0
        if n > 1:
            scored.extend(range(offset[len(prompts) + b], offset[len(prompts) + b] + n - 1))

    def keys(s: int) -> List[int]:
        if s < len(prompts):
            return list(range(offset[s], offset[s] + sizes[s][0]))
        prompt = of_row[s - len(prompts)]
        return list(range(offset[prompt], offset[prompt] + len(prompts[prompt]))) + \
            list(range(offset[s], offset[s] + sizes[s][0]))

    buckets = []
    for group in groups:
        q_w, k_w = max(sizes[s][0] for s in group), max(sizes[s][1] for s in group)
        padded = any(sizes[s][0] != q_w for s in group)
        k_index = torch.zeros((len(group), k_w), dtype=torch.long)
        for i, s in enumerate(group):
            k_index[i, :sizes[s][1]] = torch.tensor(keys(s), dtype=torch.long)
        causal = all(sizes[s] == (q_w, k_w) and s < len(prompts) for s in group)
        mask = q_index = valid = None
        if not causal:
            q_len = torch.tensor([sizes[s][0] for s in group])[:, None, None]
            k_len = torch.tensor([sizes[s][1] for s in group])[:, None, None]
            qi = torch.arange(q_w)[None, :, None]
            kj = torch.arange(k_w)[None, None, :]
            mask = (kj < k_len) & (kj <= k_len - q_len + qi)
            mask = mask | ((qi >= q_len) & (kj == 0))  # a padded query attends somewhere (no NaN); dropped
            mask = mask.unsqueeze(1).to(device)
        if padded:
            slots = torch.arange(q_w)[None, :] < torch.tensor([sizes[s][0] for s in group])[:, None]
            local = torch.zeros((len(group), q_w), dtype=torch.long)
            start = 0
            for i, s in enumerate(group):
                local[i, :sizes[s][0]] = torch.arange(start, start + sizes[s][0])
                start += sizes[s][0]
            q_index, valid = local.reshape(-1).to(device), slots.reshape(-1).nonzero().squeeze(-1).to(device)
        buckets.append(Bucket(offset[group[0]], sum(sizes[s][0] for s in group), len(group), q_w, k_w,
                              q_index, valid, k_index.reshape(-1).to(device), mask))
    assert sum(b.q_total for b in buckets) == n_tokens
    return PackedLayout(token_ids, flat_positions, torch.tensor(scored, dtype=torch.long, device=device), buckets)
