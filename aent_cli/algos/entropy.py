"""Per-position entropies of a softmax policy: the ordinary one (EntReg) and the clamped one (AEnt).

clamped_entropy drops, at each position, the floor(p * V) lowest logits (never all of them) and takes
the entropy of the softmax re-normalised over the rest. The kept set is a selection (no gradient
through it), so d H~ / d x_i = -pi~_i (x_i - E_pi~[x]) on kept tokens and exactly 0 on dropped ones.
Ties at the threshold: the value does not depend on which tied tokens are kept (they are equal); for
the gradient the lowest-index tied tokens are the kept ones.

Both functions take logits of any leading shape, compute in fp32 (bf16/fp16 are upcast per chunk; fp64
stays fp64 so gradcheck can run), process `chunk_rows` rows at a time and save nothing of size [N, V]
for backward beyond the input itself: backward recomputes each chunk's probabilities from the logits
and a few numbers per row. Logits are assumed finite.

On CPU the kept set is found exactly, as torch.kthvalue would, without sorting or selecting over the
vocabulary (either costs several full entropy passes): see _kept_threshold. On accelerators, whose
selection kernels are fast, it is torch.kthvalue itself, with larger chunks.
Speed and memory: benchmarks/bench_entropy.py.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from aent_cli.algos.registry import ENTROPY_BONUSES, register

DEFAULT_CHUNK_ROWS = 8  # CPU: the chunk's few [rows, V] fp32 buffers (5 MB each at V=152k) stay in cache
_ACCELERATOR_CHUNK_ELEMENTS = 1 << 26  # GPU: ~256 MB fp32 per buffer, enough rows to fill the device

_SAMPLE = 1024  # sampled logits per row that place the first bracket
_BRACKET_SIGMAS = 3.0  # bracket half-width, in standard errors of the sample quantile's rank
_BLOCK = 64  # counts are also kept per block of this many tokens, to find the band's members
_EXACT_BELOW = 16 * _SAMPLE  # smaller vocabularies take the exact kthvalue path
_SMALL_BAND = 256  # a bracket holding at most this many tokens is ranked without narrowing it
_MAX_GATHER = 1 << 15  # a larger band (heavy ties, missed straddle) goes to the exact fallback
_K_NOISE, _K_BEND, _K_CONST = 3.0, 1.0, 16.0  # straddle margin, fitted on Gaussian, t, lognormal, bf16 rows
_SEED = 20250601  # fixed sample positions: results never depend on global RNG state

_positions: Dict[Tuple[int, str], torch.Tensor] = {}


def num_dropped(vocab_size: int, p: float) -> int:
    """floor(p * V) tokens are dropped, never all of them."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"clamping percentage p={p} must satisfy 0 <= p < 1")
    return min(int(math.floor(p * vocab_size)), vocab_size - 1)


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _below(v: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(v, v.new_full((), -math.inf))


def _above(v: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(v, v.new_full((), math.inf))


def _on_cpu(x: torch.Tensor) -> bool:
    """The CPU gets the sampled selection and per-row masking; accelerators get batched kernels."""
    return x.device.type == "cpu"


def _sample_positions(vocab: int, device: torch.device) -> torch.Tensor:
    """Fixed pseudo-random token positions (sorted, for locality) sampled from every row."""
    key = (vocab, str(device))
    if key not in _positions:
        g = torch.Generator().manual_seed(_SEED)
        _positions[key] = torch.randperm(vocab, generator=g)[:_SAMPLE].sort().values.to(device)
    return _positions[key]


# --------------------------------------------------------------------------------------------------
# The kept set of each row, as (thr, cut): token i is kept iff x_i > thr, or x_i == thr and i < cut.
# cut == V means every token equal to thr is kept; thr need not be a logit value in that case.
# --------------------------------------------------------------------------------------------------


def _exact_threshold(x: torch.Tensor, drop: int) -> Tuple[torch.Tensor, torch.Tensor]:
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


def _kept_threshold(
    x: torch.Tensor, drop: int, row_max: torch.Tensor, scratch: torch.Tensor, stats: Optional[Dict[str, int]] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(thr, cut) per row of x [R, V] such that exactly `drop` tokens are dropped, as kthvalue would.

    Three sample quantiles get exact counts around the threshold; a quadratic through them places
    two more counts tightly around it; the few tokens left between are gathered and ranked. Per row,
    #(x < a) = ca <= drop < cb = #(x < b) throughout, so the threshold value lies in [a, b).
    `scratch` [3, R, V] holds counting indicators; slot_a / slot_b say which of its slots holds a's /
    b's. The per-row bookkeeping runs in NumPy (float64 holds every fp32 value exactly), where it
    costs microseconds instead of many small torch calls.
    """
    rows, vocab = x.shape
    if vocab < _EXACT_BELOW or not _on_cpu(x):  # an accelerator's selection kernels are fast
        return _exact_threshold(x, drop)
    sample = x.index_select(1, _sample_positions(vocab, x.device))
    q = (drop + 0.5) / vocab
    centre, half = q * _SAMPLE - 0.5, _BRACKET_SIGMAS * math.sqrt(_SAMPLE * q * (1 - q)) + 1
    r_lo, r_mid, r_hi = math.floor(centre - half), min(max(round(centre), 0), _SAMPLE - 1), math.ceil(centre + half)
    # Near the ends, the sample's extremes still bracket the threshold unless that is unlikely;
    # otherwise the row's minimum (nothing below) or just above its maximum (everything below).
    r_lo = max(r_lo, 0) if q * _SAMPLE > 8 else r_lo
    r_hi = min(r_hi, _SAMPLE - 1) if (1 - q) * _SAMPLE > 8 else r_hi
    ranks = [r for r in (r_lo, r_mid, r_hi) if 0 <= r < _SAMPLE]
    quantiles = torch.from_numpy(np.partition(sample.cpu().numpy(), ranks, axis=1)[:, ranks]).to(x.device)
    lo = quantiles[:, :1] if r_lo >= 0 else x.amin(-1, keepdim=True)
    mid = quantiles[:, ranks.index(r_mid)].unsqueeze(1)
    hi = _above(quantiles[:, -1:] if r_hi < _SAMPLE else row_max)
    points = torch.cat([lo, mid, hi], 1)
    cs, bank = _count_below(x, points.T.contiguous(), scratch)
    xs = _to_numpy(points)
    valid = (cs[:, 0] <= drop) & (cs[:, 2] > drop)
    estimate, side, bend = _interpolate(xs, cs, drop + 0.5)
    every = np.arange(rows)
    a, b, ca, cb = xs[every, side], xs[every, side + 1], cs[every, side], cs[every, side + 1]
    slot_a, slot_b = side.copy(), side + 1
    n = np.maximum(cb - ca, 1)
    if (valid & (n > _SMALL_BAND) & (ca != drop)).any():
        # Straddle the estimate with two more counts; the margin covers binomial noise and model error.
        frac = np.clip((drop + 0.5 - ca) / n, 0, 1)
        step = (b - a) / n  # mean value step per rank in [a, b)
        err = (_K_NOISE * np.sqrt(n * frac * (1 - frac)) + _K_CONST) * step + _K_BEND * bend
        probes = np.clip(np.stack([estimate - err, estimate + err]), a, b)
        taus = torch.from_numpy(probes).to(x.device, x.dtype)
        counts, straddle = _count_below(x, taus, scratch[:2])
        bank = torch.cat([straddle, bank[2:]])  # slots 0 and 1 now hold the straddle's indicators
        taus = _to_numpy(taus).T
        take_a = (counts[:, 0] <= drop) & (counts[:, 0] >= ca)
        take_b = (counts[:, 1] > drop) & (counts[:, 1] <= cb)
        a, ca, slot_a = np.where(take_a, taus[:, 0], a), np.where(take_a, counts[:, 0], ca), np.where(take_a, 0, -1)
        b, cb = np.where(take_b, taus[:, 1], b), np.where(take_b, counts[:, 1], cb)
        slot_b = np.where(take_b, 1, np.where(slot_b == 2, 2, -1))

    thr = torch.from_numpy(a).to(x.device, x.dtype)  # rows with ca == drop: keeping x >= a is exact
    cut = torch.full((rows,), vocab, dtype=torch.int64, device=x.device)
    band = cb - ca
    gather = valid & (ca != drop) & (band <= _MAX_GATHER)
    fallback = ~valid | (band > _MAX_GATHER)
    stale = gather & ((slot_a < 0) | (slot_b < 0))
    if gather.any():
        for r in np.flatnonzero(stale).tolist():  # a straddle probe missed: recount [a, b) in slots 0, 1
            ends = torch.tensor([[a[r]], [b[r]]], dtype=x.dtype, device=x.device)
            bank[:2, r] = _count_below(x[r : r + 1], ends, scratch[:2, r : r + 1])[1][:, 0]
        slot_a, slot_b = np.where(stale, 0, slot_a), np.where(stale, 1, slot_b)
        idx = np.flatnonzero(gather)
        thr[idx], cut[idx] = _rank_in_band(x, bank, drop, idx, a, b, slot_a[idx], slot_b[idx], ca[idx], band[idx])
    if fallback.any():
        idx = torch.from_numpy(np.flatnonzero(fallback)).to(x.device)
        thr[idx], cut[idx] = _exact_threshold(x[idx], drop)
    if stats is not None:
        for key, mask in (("separator", valid & (ca == drop)), ("gathered", gather), ("fallback", fallback),
                          ("recounted", stale)):
            stats[key] = stats.get(key, 0) + int(mask.sum())
    return thr, cut


def _rank_in_band(x, bank, drop: int, idx: np.ndarray, a, b, slot_a, slot_b, ca, band):
    """Exact (thr, cut) for rows idx whose threshold is the (drop - ca)-th smallest of their tokens
    in [a, b): the blocks holding such tokens are found from the block counts `bank`, gathered from x,
    and the few members are ranked per row in NumPy (a sort over a few hundred values per row)."""
    rows, vocab = x.shape
    counts = bank.cpu().numpy()
    per_row = counts.shape[2]
    hit = np.flatnonzero((counts[slot_b, idx] - counts[slot_a, idx]) > 0)  # row-major: ascending positions
    hit_row, hit_block = hit // per_row, hit % per_row
    if vocab % _BLOCK:  # pad to whole blocks (a copy of x, for uncommon vocabularies)
        x = torch.nn.functional.pad(x, (0, _BLOCK - vocab % _BLOCK), value=math.inf)
    flat = torch.from_numpy(idx[hit_row] * per_row + hit_block).to(x.device)
    gathered = x.reshape(-1, _BLOCK).index_select(0, flat).cpu().numpy()  # [hits, _BLOCK]
    member = np.flatnonzero((gathered >= a[idx][hit_row, None]) & (gathered < b[idx][hit_row, None]))
    values = gathered.reshape(-1)[member]
    owner = hit_row[member // _BLOCK]
    positions = hit_block[member // _BLOCK] * _BLOCK + member % _BLOCK
    n = np.bincount(owner, minlength=len(idx))
    if not np.array_equal(n, band):  # the gathered members must be exactly the counted ones
        raise RuntimeError("clamped_entropy: band members do not match their counts")
    start = np.cumsum(n) - n
    ordered = values[np.lexsort((values, owner))]  # by row, then by value
    below = ca.astype(np.int64)
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


def _masked_into(x: torch.Tensor, thr: torch.Tensor, cut: torch.Tensor, fill: torch.Tensor, out: torch.Tensor):
    """out = x on kept tokens and fill[row] on dropped ones (one pass, no mask tensor)."""
    rows, vocab = x.shape
    if vocab < _EXACT_BELOW or not _on_cpu(x):  # one batched op beats a loop over rows here
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


# --------------------------------------------------------------------------------------------------
# Autograd: forward keeps per-row (log-normaliser, mean logit, thr, cut); backward recomputes per chunk.
# torch.exp is ~4-30x slower on arguments whose result is 0, subnormal or from -inf, so no exp here
# sees one: dropped tokens get exp(-87) (below the precision of a sum >= 1) in forward and a zero
# (x - mean) factor in backward, and a chunk whose sampled logits reach below the floor is clamped.
# --------------------------------------------------------------------------------------------------

_EXP_FLOOR = -87.0  # exp(-87) = 1.6e-38, the smallest fp32 power of e that is still a normal number


def _chunk(logits: torch.Tensor, sl: slice, temperature: float, compute: torch.dtype) -> torch.Tensor:
    x = logits[sl]
    if x.dtype != compute:
        x = x.to(compute)
        return x.div_(temperature) if temperature != 1.0 else x
    return x / temperature if temperature != 1.0 else x


def _sampled_min(x: torch.Tensor) -> torch.Tensor:
    """A cheap lower estimate of each row's minimum (a sample), only used to decide on clamping."""
    if x.shape[1] < _EXACT_BELOW:
        return x.amin(-1, keepdim=True)
    return x.index_select(1, _sample_positions(x.shape[1], x.device)).amin(-1, keepdim=True)


def _exp_(args: torch.Tensor, lowest: torch.Tensor) -> torch.Tensor:
    if _on_cpu(args) and bool((lowest < _EXP_FLOOR).any()):  # a CPU-only slow path
        args.clamp_(min=_EXP_FLOOR)
    return args.exp_()


class _Entropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, drop: int, temperature: float, chunk: int, stats) -> torch.Tensor:
        n, vocab = logits.shape
        compute = _compute_dtype(logits)
        new = lambda *shape, dtype=compute: torch.empty(*shape, dtype=dtype, device=logits.device)  # noqa: E731
        out, log_z, mean, low, thr, cut = new(n), new(n, 1), new(n, 1), new(n, 1), new(n), new(n, dtype=torch.int64)
        buf = new(min(chunk, n), vocab)
        scratch = new(3, min(chunk, n), vocab, dtype=torch.float32) if drop else None
        for start in range(0, n, chunk):
            sl = slice(start, start + chunk)
            x = _chunk(logits, sl, temperature, compute)
            e = buf[: x.shape[0]]
            m = x.amax(dim=-1, keepdim=True)
            low[sl] = _sampled_min(x)
            if drop:
                thr[sl], cut[sl] = _kept_threshold(x, drop, m, scratch[:, : x.shape[0]], stats)
                _masked_into(x, thr[sl], cut[sl], (m + _EXP_FLOOR).squeeze(1), e).sub_(m)
                _exp_(e, thr[sl].unsqueeze(1) - m)
            else:
                _exp_(torch.sub(x, m, out=e), low[sl] - m)
            z = e.sum(-1, keepdim=True)
            mean[sl] = torch.linalg.vecdot(e, x).unsqueeze(-1) / z
            log_z[sl] = m + torch.log(z)
            out[sl] = (log_z[sl] - mean[sl]).squeeze(-1)
        ctx.save_for_backward(logits, log_z, mean, low, thr, cut)
        ctx.drop, ctx.temperature, ctx.chunk = drop, temperature, chunk
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, log_z, mean, low, thr, cut = ctx.saved_tensors
        n, vocab = logits.shape
        compute = _compute_dtype(logits)
        grad = torch.empty_like(logits)
        p = torch.empty(min(ctx.chunk, n), vocab, dtype=compute, device=logits.device)
        staging = None if logits.dtype == compute else torch.empty_like(p)
        scale_all = grad_out.to(compute).unsqueeze(-1) / ctx.temperature
        for start in range(0, n, ctx.chunk):
            sl = slice(start, start + ctx.chunk)
            scale = scale_all[sl]
            silent = scale.squeeze(1) == 0  # e.g. padding positions: their gradient is exactly 0
            if bool(silent.all()):
                grad[sl] = 0
                continue
            x = _chunk(logits, sl, ctx.temperature, compute)
            rows = x.shape[0]
            # |dL/dH| is folded into the exponent: p * |g| = exp(x - log Z + log|g|).
            shift = log_z[sl] - torch.log(scale.abs())
            _exp_(torch.sub(x, shift, out=p[:rows]), low[sl] - shift)
            g = grad[sl] if staging is None else staging[:rows]
            if ctx.drop:  # x := mean on dropped tokens, so their (x - mean) factor is exactly 0
                _masked_into(x, thr[sl], cut[sl], mean[sl].squeeze(1), g)
                x = g
            # dH/dx_i = p_i * (mean - x_i); the sign of g decides which way round to subtract.
            positive = scale.squeeze(1) > 0
            if bool(positive.all()):
                torch.sub(mean[sl], x, out=g)
            else:
                torch.sub(x, mean[sl], out=g)
                for r in positive.nonzero().squeeze(1).tolist():
                    g[r].neg_()
            g.mul_(p[:rows])
            for r in silent.nonzero().squeeze(1).tolist():
                g[r] = 0
            if staging is not None:
                grad[sl] = g
        return grad, None, None, None, None


def _apply(logits, drop_of_vocab, temperature: float, chunk_rows: Optional[int], stats=None) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    if chunk_rows is None:
        cpu = logits.device.type == "cpu"
        chunk_rows = DEFAULT_CHUNK_ROWS if cpu else max(1, _ACCELERATOR_CHUNK_ELEMENTS // max(logits.shape[-1], 1))
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows} must be >= 1")
    lead, vocab = logits.shape[:-1], logits.shape[-1]
    if vocab == 0:
        raise ValueError("logits have an empty vocabulary dimension")
    rows = logits.reshape(-1, vocab)
    if rows.shape[0] == 0:
        return torch.zeros(lead, dtype=_compute_dtype(logits), device=logits.device)
    if not rows.is_contiguous():
        rows = rows.contiguous()
    drop = drop_of_vocab(vocab)
    return _Entropy.apply(rows, drop, float(temperature), int(chunk_rows), stats).reshape(lead)


def full_entropy(logits: torch.Tensor, temperature: float = 1.0, chunk_rows: Optional[int] = None) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) over the whole vocabulary, per position (fp32).
    `chunk_rows` rows are processed at a time (default: DEFAULT_CHUNK_ROWS on CPU, ~256 MB worth on an
    accelerator); results do not depend on it."""
    return _apply(logits, lambda vocab: 0, temperature, chunk_rows)


def clamped_entropy(
    logits: torch.Tensor, p: float, temperature: float = 1.0, chunk_rows: Optional[int] = None
) -> torch.Tensor:
    """Entropy of the softmax re-normalised over all but the floor(p * V) lowest logits, per position."""
    return _apply(logits, lambda vocab: num_dropped(vocab, p), temperature, chunk_rows)


register(ENTROPY_BONUSES, "full")(lambda logits, p=0.0, temperature=1.0: full_entropy(logits, temperature))
register(ENTROPY_BONUSES, "clamped")(clamped_entropy)
