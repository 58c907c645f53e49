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

Finding the kept set exactly without sorting or kthvalue over the vocabulary (both cost several times
a full entropy pass): a sample of each row places a bracket around the threshold, counting passes
(#(x < tau), also kept per block of tokens) confirm and narrow it, and the few tokens left inside are
gathered by block and ranked exactly. A row whose bracket misses falls back to torch.kthvalue.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch

from aent_cli.algos.registry import ENTROPY_BONUSES, register

DEFAULT_CHUNK_ROWS = 16  # [16, 152k] fp32 buffers (~10 MB each) stay in a server CPU's L3 cache

_SAMPLE = 1024  # sampled logits per row that place the first bracket
_BRACKET_SIGMAS = 3.0  # bracket half-width, in standard errors of the sample quantile's rank
_BLOCK = 64  # counts are also kept per block of this many tokens, to find the band's members
_EXACT_BELOW = 16 * _SAMPLE  # smaller vocabularies take the exact kthvalue path
_SMALL_BAND = 256  # narrowing stops once a row's bracket holds at most this many tokens
_MAX_ROUNDS = 3  # narrowing rounds (two counting passes each) before gathering the band
_MAX_GATHER = 1 << 15  # a band larger than this after the rounds goes to the exact fallback
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


def _count_below(x: torch.Tensor, taus: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """#(x < tau) for each of the k thresholds taus [R, k] of every row, in one pass; out [R, k, V]
    keeps the 0/1 indicators. fp32 sums of 0/1 are exact integers below 2**24."""
    return torch.lt(x.unsqueeze(1), taus.unsqueeze(2), out=out).sum(-1)


def _interpolate(xs: torch.Tensor, cs: torch.Tensor, target: float) -> Tuple[torch.Tensor, ...]:
    """Estimate the value of rank `target` from three exact (value, count) points per row: the
    quadratic through them (inverse CDF), kept inside the half bracket that holds the target, whose
    ends are returned as an index 0 (first half) or 1 (second half)."""
    c0, c1, c2 = cs.unbind(1)
    x0, x1, x2 = xs.unbind(1)
    half = (c1 <= target).long()
    lo, hi = xs.gather(1, half.unsqueeze(1)).squeeze(1), xs.gather(1, half.unsqueeze(1) + 1).squeeze(1)
    c_lo, c_hi = cs.gather(1, half.unsqueeze(1)).squeeze(1), cs.gather(1, half.unsqueeze(1) + 1).squeeze(1)
    linear = lo + (hi - lo) * ((target - c_lo) / (c_hi - c_lo).clamp(min=1)).clamp(0, 1)
    d01, d02, d12 = c0 - c1, c0 - c2, c1 - c2
    ok = (d01 < 0) & (d12 < 0)
    d01, d02, d12 = d01.clamp(max=-1), d02.clamp(max=-1), d12.clamp(max=-1)
    quad = (x0 * (target - c1) * (target - c2) / (d01 * d02) - x1 * (target - c0) * (target - c2) / (d01 * d12)
            + x2 * (target - c0) * (target - c1) / (d02 * d12))
    estimate = torch.where(ok & torch.isfinite(quad), torch.minimum(torch.maximum(quad, lo), hi), linear)
    return estimate, half, (estimate - linear).abs()


def _kept_threshold(
    x: torch.Tensor, drop: int, row_max: torch.Tensor, scratch: torch.Tensor, stats: Optional[Dict[str, int]] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(thr, cut) per row of x [R, V] such that exactly `drop` tokens are dropped, as kthvalue would.

    Invariant per row: #(x < a) = ca <= drop < cb = #(x < b), so the threshold value lies in [a, b).
    Three sample quantiles give exact counts around the threshold; a quadratic through them places
    two more counts tightly around it; the tokens left between are gathered and ranked.
    `scratch` [R, 3, V] holds the counting indicators.
    """
    rows, vocab = x.shape
    if vocab < _EXACT_BELOW:
        return _exact_threshold(x, drop)
    sample = x.index_select(1, _sample_positions(vocab, x.device))
    q = (drop + 0.5) / vocab
    centre, half = q * _SAMPLE - 0.5, _BRACKET_SIGMAS * math.sqrt(_SAMPLE * q * (1 - q)) + 1
    r_lo, r_mid, r_hi = math.floor(centre - half), min(max(round(centre), 0), _SAMPLE - 1), math.ceil(centre + half)
    # Near the ends, the sample's extremes still bracket the threshold unless that is unlikely.
    r_lo = max(r_lo, 0) if q * _SAMPLE > 8 else r_lo
    r_hi = min(r_hi, _SAMPLE - 1) if (1 - q) * _SAMPLE > 8 else r_hi
    # The outer points fall back to the row's minimum (nothing below) and just above its maximum.
    lo = sample.kthvalue(r_lo + 1, -1, keepdim=True).values if r_lo >= 0 else x.amin(-1, keepdim=True)
    mid = sample.kthvalue(r_mid + 1, -1, keepdim=True).values
    hi = _above(sample.kthvalue(r_hi + 1, -1, keepdim=True).values if r_hi < _SAMPLE else row_max)
    xs = torch.cat([lo, mid, hi], 1)
    cs = _count_below(x, xs, scratch)
    valid = (cs[:, 0] <= drop) & (cs[:, 2] > drop)
    estimate, side, bend = _interpolate(xs.double(), cs.double(), drop + 0.5)
    a, b = xs.gather(1, side.unsqueeze(1)), xs.gather(1, side.unsqueeze(1) + 1)
    ca, cb = cs.gather(1, side.unsqueeze(1)).squeeze(1), cs.gather(1, side.unsqueeze(1) + 1).squeeze(1)

    n = (cb - ca).clamp(min=1)
    if bool((valid & (n > _SMALL_BAND) & (ca != drop)).any()):
        # Straddle the estimate with two more counts; the margin covers binomial noise and model error.
        frac = ((drop + 0.5 - ca) / n).clamp(0, 1)
        spread = (b - a).squeeze(1).double() / n.double()  # mean value step per rank in [a, b)
        err = _K_NOISE * torch.sqrt(n * frac * (1 - frac)) + _K_BEND * bend / spread + _K_CONST
        taus = torch.stack([estimate - err * spread, estimate + err * spread], 1)
        taus = torch.minimum(torch.maximum(taus, a.double()), b.double()).to(x.dtype)
        counts = _count_below(x, taus, scratch[:, :2])
        low = (counts <= drop) & (counts >= ca.unsqueeze(1))
        high = (counts > drop) & (counts <= cb.unsqueeze(1))
        take_a, take_b = low[:, 0], high[:, 1]
        a, ca = torch.where(take_a.unsqueeze(1), taus[:, :1], a), torch.where(take_a, counts[:, 0], ca)
        b, cb = torch.where(take_b.unsqueeze(1), taus[:, 1:], b), torch.where(take_b, counts[:, 1], cb)
        fresh = take_a & take_b
    else:  # a and b are points (0, 1) or (1, 2) of the first count: move the latter to (0, 1)
        for r in (side == 1).nonzero().squeeze(1).tolist():
            scratch[r, :2] = scratch[r, 1:].clone()
        fresh = torch.ones_like(valid)
    thr = a.squeeze(1).clone()  # rows with ca == drop: #(x < a) == drop, so keeping x >= a is exact
    cut = torch.full((rows,), vocab, dtype=torch.int64, device=x.device)
    band = cb - ca
    gather = valid & (ca != drop) & (band <= _MAX_GATHER)
    fallback = ~valid | (band > _MAX_GATHER)
    if bool(gather.any()):
        for r in (gather & ~fresh).nonzero().squeeze(1).tolist():  # recount this row's [a, b)
            torch.lt(x[r], torch.cat([a[r], b[r]]).unsqueeze(1), out=scratch[r, :2])
        idx = gather.nonzero().squeeze(1)
        scratch[:, 1].sub_(scratch[:, 0])  # 1 on a <= x < b
        thr[idx], cut[idx] = _rank_in_band(x, scratch, drop, idx, ca[idx], band[idx])
    if bool(fallback.any()):
        idx = fallback.nonzero().squeeze(1)
        thr[idx], cut[idx] = _exact_threshold(x[idx], drop)
    if stats is not None:
        for key, mask in (("separator", valid & (ca == drop)), ("gathered", gather), ("fallback", fallback),
                          ("recounted", gather & ~fresh)):
            stats[key] = stats.get(key, 0) + int(mask.sum())
    return thr, cut


def _rank_in_band(x, scratch, drop, idx, ca, band) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact (thr, cut) for rows idx whose threshold is the (drop - ca)-th smallest of their members,
    the tokens marked 1 in scratch[:, 1]."""
    vocab = x.shape[1]
    if vocab % _BLOCK:  # pad the rows to whole blocks (a copy, for uncommon vocabulary sizes)
        pad = (0, _BLOCK - vocab % _BLOCK)
        x, scratch = torch.nn.functional.pad(x[idx], pad), torch.nn.functional.pad(scratch[idx], pad)
        idx = torch.arange(idx.numel(), device=x.device)
    per_row = x.shape[1] // _BLOCK
    x_blocks, s_blocks = x.reshape(-1, _BLOCK), scratch.reshape(-1, _BLOCK)  # views: both contiguous
    counts = scratch[:, 1].unflatten(1, (per_row, _BLOCK)).sum(-1).index_select(0, idx)
    hit_row, hit_block = (counts > 0).nonzero(as_tuple=True)  # row-major: positions ascend per row
    flat = idx[hit_row] * per_row + hit_block
    slot_1 = flat + (idx[hit_row] * (scratch.shape[1] - 1) + 1) * per_row  # block of scratch[row, 1]
    found = (s_blocks.index_select(0, slot_1) > 0).view(-1).nonzero().squeeze(1)
    vals = x_blocks.index_select(0, flat).view(-1).index_select(0, found)
    block, lane = found // _BLOCK, found % _BLOCK
    pos, owner = hit_block[block] * _BLOCK + lane, hit_row[block]
    n = band.long()
    start = torch.cumsum(n, 0) - n
    col = torch.arange(vals.numel(), device=x.device) - start[owner]
    padded = torch.full((idx.numel(), int(n.max())), math.inf, dtype=x.dtype, device=x.device)
    padded[owner, col] = vals
    j = (drop - ca).long().unsqueeze(1)
    t = padded.sort(-1).values.gather(1, j)
    n_lt = ca.long() + (padded < t).sum(-1)
    n_le = ca.long() + (padded <= t).sum(-1)
    kept_ties = n_le - drop
    cut = torch.full_like(n_lt, vocab)
    partial = kept_ties < n_le - n_lt
    if bool(partial.any()):
        tied = (vals == t.squeeze(1)[owner]).long()
        rank = torch.cumsum(tied, 0)
        rank = rank - (rank - tied)[start][owner]  # 1-based rank among its row's tied members
        first_dropped = (tied == 1) & (rank == kept_ties[owner] + 1)
        cut[owner[first_dropped]] = pos[first_dropped]
    return t.squeeze(1), cut


def _masked_into(x: torch.Tensor, thr: torch.Tensor, cut: torch.Tensor, fill: torch.Tensor, out: torch.Tensor):
    """out = x on kept tokens and fill[row] on dropped ones (one pass, no mask tensor)."""
    rows, vocab = x.shape
    if vocab < _EXACT_BELOW:  # small rows: one batched op beats a Python loop over rows
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
    if bool((lowest < _EXP_FLOOR).any()):
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
        scratch = new(min(chunk, n), 3, vocab, dtype=torch.float32) if drop else None
        for start in range(0, n, chunk):
            sl = slice(start, start + chunk)
            x = _chunk(logits, sl, temperature, compute)
            e = buf[: x.shape[0]]
            m = x.amax(dim=-1, keepdim=True)
            low[sl] = _sampled_min(x)
            if drop:
                thr[sl], cut[sl] = _kept_threshold(x, drop, m, scratch[: x.shape[0]], stats)
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
            x = _chunk(logits, sl, ctx.temperature, compute)
            rows = x.shape[0]
            scale = scale_all[sl]
            # |dL/dH| is folded into the exponent: p * |g| = exp(x - log Z + log|g|); g = 0 gives exactly 0.
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
            if staging is not None:
                grad[sl] = g
        return grad, None, None, None, None


def _apply(logits, drop_of_vocab, temperature: float, chunk_rows: int, stats=None) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
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


def full_entropy(logits: torch.Tensor, temperature: float = 1.0, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) over the whole vocabulary, per position (fp32)."""
    return _apply(logits, lambda vocab: 0, temperature, chunk_rows)


def clamped_entropy(
    logits: torch.Tensor, p: float, temperature: float = 1.0, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> torch.Tensor:
    """Entropy of the softmax re-normalised over all but the floor(p * V) lowest logits, per position."""
    return _apply(logits, lambda vocab: num_dropped(vocab, p), temperature, chunk_rows)


register(ENTROPY_BONUSES, "full")(lambda logits, p=0.0, temperature=1.0: full_entropy(logits, temperature))
register(ENTROPY_BONUSES, "clamped")(clamped_entropy)
