"""The kept set of the clamped entropy on the torch path: which floor(p * V) logits of each row are
dropped, found exactly (as torch.kthvalue would, lowest-index ties kept) without sorting the row.

The kept set of a row is (thr, cut): token i is kept iff x_i > thr, or x_i == thr and i < cut
(cut == V keeps every token equal to thr; thr need not be a logit value then). On CPU a sampled
bracket is counted, narrowed and ranked (kept_threshold); on accelerators and small vocabularies it
is torch.kthvalue (exact_threshold). entropy.py uses these where the fused C kernels
(entropy_native.py) do not run.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch

SAMPLE = 1024  # sampled logits per row that place the first bracket
_BRACKET_SIGMAS = 3.0  # bracket half-width, in standard errors of the sample quantile's rank
_BLOCK = 64  # counts are also kept per block of this many tokens, to find the band's members
EXACT_BELOW = 16 * SAMPLE  # smaller vocabularies take the exact kthvalue path
_SMALL_BAND = 256  # a bracket holding at most this many tokens is ranked without narrowing it
_MAX_GATHER = 1 << 15  # a larger band (heavy ties, missed straddle) goes to the exact fallback
_K_NOISE, _K_BEND, _K_CONST = 3.0, 1.0, 16.0  # straddle margin, fitted on Gaussian, t, lognormal, bf16 rows
_SEED = 20250601  # fixed sample positions: results never depend on global RNG state

_positions: Dict[Tuple[int, str], torch.Tensor] = {}


def _below(v: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(v, v.new_full((), -math.inf))


def _above(v: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(v, v.new_full((), math.inf))


def on_cpu(x: torch.Tensor) -> bool:
    """The CPU gets the sampled selection and per-row masking; accelerators get batched kernels."""
    return x.device.type == "cpu"


def sample_positions(vocab: int, device: torch.device) -> torch.Tensor:
    """Fixed pseudo-random token positions (sorted, for locality) sampled from every row."""
    key = (vocab, str(device))
    if key not in _positions:
        g = torch.Generator().manual_seed(_SEED)
        _positions[key] = torch.randperm(vocab, generator=g)[:SAMPLE].sort().values.to(device)
    return _positions[key]


def exact_threshold(x: torch.Tensor, drop: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reference selection by torch.kthvalue (small vocabularies and fallback rows)."""
    rows, vocab = x.shape
    t = torch.kthvalue(x, drop + 1, dim=-1, keepdim=True).values
    n_lt = (x < t).sum(-1)
    n_le = (x <= t).sum(-1)
    cut = torch.full((rows,), vocab, dtype=torch.int64, device=x.device)
    kept_ties = n_le - drop
    partial = kept_ties < n_le - n_lt
    if bool(partial.any()):
        idx = partial.nonzero().squeeze(1)
        tied = x[idx] == t[idx]
        first_dropped = tied & (torch.cumsum(tied, -1) == kept_ties[idx].unsqueeze(1) + 1)
        cut[idx] = first_dropped.to(torch.int8).argmax(-1)
    return t.squeeze(-1), cut


def _count_below(x: torch.Tensor, taus: torch.Tensor, out: torch.Tensor) -> Tuple[np.ndarray, torch.Tensor]:
    """#(x < tau) for the k thresholds taus [k, R] of every row, in one pass over x [R, V].

    out [k, R, V] keeps the 0/1 indicators. Returns the counts [R, k] (NumPy) and the per-block
    counts [k, R, blocks] (the vocabulary tail is one more block); fp32 sums of 0/1 are exact.
    """
    ind = torch.lt(x.unsqueeze(0), taus.unsqueeze(2), out=out)
    whole = (x.shape[1] // _BLOCK) * _BLOCK
    blocks = ind[..., :whole].unflatten(2, (-1, _BLOCK)).sum(-1)
    if whole < x.shape[1]:
        blocks = torch.cat([blocks, ind[..., whole:].sum(-1, keepdim=True)], 2)
    return _to_numpy(blocks.sum(-1)).T, blocks


def _interpolate(xs: np.ndarray, cs: np.ndarray, target: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimate the value of rank `target` from three exact (value, count) points per row [R, 3]: the
    quadratic through them (the inverse CDF), kept inside the half bracket that holds the target.
    Returns the estimate, that half (0: points 0-1, 1: points 1-2) and |quadratic - linear|."""
    rows = np.arange(len(xs))
    side = (cs[:, 1] <= target).astype(np.int64)
    lo, hi, c_lo, c_hi = xs[rows, side], xs[rows, side + 1], cs[rows, side], cs[rows, side + 1]
    with np.errstate(invalid="ignore"):  # -inf bracket ends (masked vocabularies) give NaN, not taken
        linear = lo + (hi - lo) * np.clip((target - c_lo) / np.maximum(c_hi - c_lo, 1), 0, 1)
    (x0, x1, x2), (c0, c1, c2) = xs.T, cs.T
    ok = (c0 < c1) & (c1 < c2) & np.isfinite(xs).all(1)
    d01, d02, d12 = np.minimum(c0 - c1, -1), np.minimum(c0 - c2, -1), np.minimum(c1 - c2, -1)
    with np.errstate(all="ignore"):
        quad = (x0 * (target - c1) * (target - c2) / (d01 * d02) - x1 * (target - c0) * (target - c2) / (d01 * d12)
                + x2 * (target - c0) * (target - c1) / (d02 * d12))
        estimate = np.where(ok & np.isfinite(quad), np.clip(quad, lo, hi), linear)
    return estimate, side, np.abs(estimate - linear)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


def kept_threshold(
    x: torch.Tensor, drop: int, row_max: torch.Tensor, scratch: torch.Tensor, stats: Optional[Dict[str, int]] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(thr, cut) per row of x [R, V] such that exactly `drop` tokens are dropped, as kthvalue would.

    Three sample quantiles get exact counts around the threshold; a quadratic through them places
    two more counts tightly around it; the few tokens left between are gathered and ranked. Per row,
    the bracket [low, high) holds the threshold value: #(x < low) = below_low <= drop < below_high =
    #(x < high) throughout. `scratch` [3, R, V] holds counting indicators; low_slot / high_slot say
    which of its slots holds low's / high's (-1: none, recount). The per-row bookkeeping runs in NumPy
    (float64 holds every fp32 value exactly), where it costs microseconds instead of many small torch calls.
    """
    rows, vocab = x.shape
    if vocab < EXACT_BELOW or not on_cpu(x):  # an accelerator's selection kernels are fast
        return exact_threshold(x, drop)
    sample = x.index_select(1, sample_positions(vocab, x.device))
    q = (drop + 0.5) / vocab
    centre, half = q * SAMPLE - 0.5, _BRACKET_SIGMAS * math.sqrt(SAMPLE * q * (1 - q)) + 1
    r_lo, r_mid, r_hi = math.floor(centre - half), min(max(round(centre), 0), SAMPLE - 1), math.ceil(centre + half)
    # Near the ends, the sample's extremes still bracket the threshold unless that is unlikely;
    # otherwise the row's minimum (nothing below) or just above its maximum (everything below).
    r_lo = max(r_lo, 0) if q * SAMPLE > 8 else r_lo
    r_hi = min(r_hi, SAMPLE - 1) if (1 - q) * SAMPLE > 8 else r_hi
    ranks = [r for r in (r_lo, r_mid, r_hi) if 0 <= r < SAMPLE]
    quantiles = torch.from_numpy(np.partition(sample.cpu().numpy(), ranks, axis=1)[:, ranks]).to(x.device)
    lo = quantiles[:, :1] if r_lo >= 0 else x.amin(-1, keepdim=True)
    mid = quantiles[:, ranks.index(r_mid)].unsqueeze(1)
    hi = _above(quantiles[:, -1:] if r_hi < SAMPLE else row_max)
    points = torch.cat([lo, mid, hi], 1)
    counts_at_points, bank = _count_below(x, points.T.contiguous(), scratch)
    values_at_points = _to_numpy(points)
    valid = (counts_at_points[:, 0] <= drop) & (counts_at_points[:, 2] > drop)
    estimate, side, bend = _interpolate(values_at_points, counts_at_points, drop + 0.5)
    every = np.arange(rows)
    low, high = values_at_points[every, side], values_at_points[every, side + 1]
    below_low, below_high = counts_at_points[every, side], counts_at_points[every, side + 1]
    low_slot, high_slot = side.copy(), side + 1
    width = np.maximum(below_high - below_low, 1)  # tokens in [low, high)
    if (valid & (width > _SMALL_BAND) & (below_low != drop)).any():
        # Straddle the estimate with two more counts; the margin covers binomial noise and model error.
        frac = np.clip((drop + 0.5 - below_low) / width, 0, 1)
        step = (high - low) / width  # mean value step per rank in [low, high)
        err = (_K_NOISE * np.sqrt(width * frac * (1 - frac)) + _K_CONST) * step + _K_BEND * bend
        probes = np.clip(np.stack([estimate - err, estimate + err]), low, high)
        taus = torch.from_numpy(probes).to(x.device, x.dtype)
        counts, straddle = _count_below(x, taus, scratch[:2])
        bank = torch.cat([straddle, bank[2:]])  # slots 0 and 1 now hold the straddle's indicators
        taus = _to_numpy(taus).T
        take_low = (counts[:, 0] <= drop) & (counts[:, 0] >= below_low)
        take_high = (counts[:, 1] > drop) & (counts[:, 1] <= below_high)
        low, below_low = np.where(take_low, taus[:, 0], low), np.where(take_low, counts[:, 0], below_low)
        low_slot = np.where(take_low, 0, -1)
        high, below_high = np.where(take_high, taus[:, 1], high), np.where(take_high, counts[:, 1], below_high)
        high_slot = np.where(take_high, 1, np.where(high_slot == 2, 2, -1))

    thr = torch.from_numpy(low).to(x.device, x.dtype)  # rows with below_low == drop: keeping x >= low is exact
    cut = torch.full((rows,), vocab, dtype=torch.int64, device=x.device)
    band = below_high - below_low
    gather = valid & (below_low != drop) & (band <= _MAX_GATHER)
    fallback = ~valid | (band > _MAX_GATHER)
    stale = gather & ((low_slot < 0) | (high_slot < 0))
    if gather.any():
        for r in np.flatnonzero(stale).tolist():  # a straddle probe missed: recount [low, high) in slots 0, 1
            ends = torch.tensor([[low[r]], [high[r]]], dtype=x.dtype, device=x.device)
            bank[:2, r] = _count_below(x[r : r + 1], ends, scratch[:2, r : r + 1])[1][:, 0]
        low_slot, high_slot = np.where(stale, 0, low_slot), np.where(stale, 1, high_slot)
        idx = np.flatnonzero(gather)
        thr[idx], cut[idx] = _rank_in_band(x, bank, drop, idx, low, high, low_slot[idx], high_slot[idx],
                                           below_low[idx], band[idx])
    if fallback.any():
        idx = torch.from_numpy(np.flatnonzero(fallback)).to(x.device)
        thr[idx], cut[idx] = exact_threshold(x[idx], drop)
    if stats is not None:
        for key, mask in (("separator", valid & (below_low == drop)), ("gathered", gather), ("fallback", fallback),
                          ("recounted", stale)):
            stats[key] = stats.get(key, 0) + int(mask.sum())
    return thr, cut


def _rank_in_band(x, bank, drop: int, idx: np.ndarray, low, high, low_slot, high_slot, below_low, band):
    """Exact (thr, cut) for rows idx whose threshold is the (drop - below_low)-th smallest of their
    tokens in [low, high): the blocks holding such tokens are found from the block counts `bank`
    (slots low_slot / high_slot), gathered from x, and the few members are ranked per row in NumPy
    (a sort over a few hundred values per row)."""
    rows, vocab = x.shape
    counts = bank.cpu().numpy()
    per_row = counts.shape[2]
    hit = np.flatnonzero((counts[high_slot, idx] - counts[low_slot, idx]) > 0)  # row-major: ascending positions
    hit_row, hit_block = hit // per_row, hit % per_row
    if vocab % _BLOCK:  # pad to whole blocks (a copy of x, for uncommon vocabularies)
        x = torch.nn.functional.pad(x, (0, _BLOCK - vocab % _BLOCK), value=math.inf)
    flat = torch.from_numpy(idx[hit_row] * per_row + hit_block).to(x.device)
    gathered = x.reshape(-1, _BLOCK).index_select(0, flat).cpu().numpy()  # [hits, _BLOCK]
    member = np.flatnonzero((gathered >= low[idx][hit_row, None]) & (gathered < high[idx][hit_row, None]))
    values = gathered.reshape(-1)[member]
    owner = hit_row[member // _BLOCK]
    positions = hit_block[member // _BLOCK] * _BLOCK + member % _BLOCK
    n = np.bincount(owner, minlength=len(idx))
    if not np.array_equal(n, band):  # the gathered members must be exactly the counted ones
        raise RuntimeError("clamped_entropy: band members do not match their counts")
    start = np.cumsum(n) - n
    ordered = values[np.lexsort((values, owner))]  # by row, then by value
    below = below_low.astype(np.int64)
    thr = ordered[start + drop - below]
    n_lt = below + np.bincount(owner, weights=values < thr[owner], minlength=len(idx)).astype(np.int64)
    n_le = below + np.bincount(owner, weights=values <= thr[owner], minlength=len(idx)).astype(np.int64)
    kept_ties = n_le - drop
    cut = np.full(len(idx), vocab, dtype=np.int64)
    partial = kept_ties < n_le - n_lt
    if partial.any():  # keep the lowest-index ties: cut at the first dropped one
        tied = values == thr[owner]
        rank = np.cumsum(tied)
        rank -= (rank - tied)[start][owner]  # 1-based rank of each tied member within its row
        first_dropped = tied & (rank == kept_ties[owner] + 1) & partial[owner]
        cut[owner[first_dropped]] = positions[first_dropped]
    return torch.from_numpy(thr).to(x.device, x.dtype), torch.from_numpy(cut).to(x.device)


def masked_into(x: torch.Tensor, thr: torch.Tensor, cut: torch.Tensor, fill: torch.Tensor, out: torch.Tensor):
    """out = x on kept tokens and fill[row] on dropped ones (one pass, no mask tensor)."""
    rows, vocab = x.shape
    if vocab < EXACT_BELOW or not on_cpu(x):  # one batched op beats a loop over rows here
        t = thr.unsqueeze(1)
        keep = (x > t) | ((x == t) & (torch.arange(vocab, device=x.device) < cut.unsqueeze(1)))
        return torch.where(keep, x, fill.unsqueeze(1).to(x.dtype), out=out)
    thresholds, below, cuts, fills = thr.tolist(), _below(thr).tolist(), cut.tolist(), fill.tolist()
    for r in range(rows):
        c = cuts[r]
        torch.threshold(x[r, :c], below[r], fills[r], out=out[r, :c])  # keeps x >= thr
        if c < vocab:  # tied tokens from index `cut` on are dropped: keep only x > thr there
            torch.threshold(x[r, c:], thresholds[r], fills[r], out=out[r, c:])
    return out
