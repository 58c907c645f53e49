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
    return torch.nextafter(v, torch.full_like(v, -math.inf))


def _above(v: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(v, torch.full_like(v, math.inf))


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


def _count_below(x: torch.Tensor, tau: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """#(x < tau) per row in one pass; `out` keeps the 0/1 indicator. fp32 sums of 0/1 are exact."""
    return torch.lt(x, tau, out=out).sum(-1)


def _kept_threshold(
    x: torch.Tensor, drop: int, row_max: torch.Tensor, scratch: Tuple[torch.Tensor, torch.Tensor],
    stats: Optional[Dict[str, int]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(thr, cut) per row of x [R, V] such that exactly `drop` tokens are dropped, as kthvalue would.

    Invariant per row: #(x < a) = ca <= drop < cb = #(x < b), so the threshold value lies in [a, b).
    The indicators of the latest pair of counts stay in `scratch` (lower, upper) to find [a, b)'s members.
    """
    rows, vocab = x.shape
    if vocab < _EXACT_BELOW:
        return _exact_threshold(x, drop)
    ind_a, ind_b = scratch
    sample = x.index_select(1, _sample_positions(vocab, x.device))
    q = (drop + 0.5) / vocab
    centre, half = q * _SAMPLE - 0.5, _BRACKET_SIGMAS * math.sqrt(_SAMPLE * q * (1 - q)) + 1
    r_lo, r_hi = math.floor(centre - half), math.ceil(centre + half)
    # The bracket ends fall back to the row's minimum (nothing below) and just above its maximum.
    a = sample.kthvalue(r_lo + 1, -1, keepdim=True).values if r_lo >= 0 else x.amin(-1, keepdim=True)
    b = _above(sample.kthvalue(r_hi + 1, -1, keepdim=True).values if r_hi < _SAMPLE else row_max)
    ca, cb = _count_below(x, a, ind_a), _count_below(x, b, ind_b)
    valid = (ca <= drop) & (cb > drop)
    fresh_a = fresh_b = torch.ones_like(valid)  # whether ind_a / ind_b hold the indicator of a / b

    for _ in range(_MAX_ROUNDS):  # straddle the interpolated threshold with two counting passes
        n = cb - ca
        if not bool((valid & (n > _SMALL_BAND) & (ca != drop)).any()):
            break
        n = torch.where(valid, n, torch.ones_like(n))
        frac = (drop + 0.5 - ca) / n
        # Interpolation error in ranks: binomial noise plus curvature of the CDF over the bracket.
        err = (2.5 * torch.sqrt(n * frac * (1 - frac)) + 0.03 * n + 4) / n
        lo = a + (b - a) * (frac - err).clamp(0, 1).unsqueeze(1).to(x.dtype)
        hi = a + (b - a) * (frac + err).clamp(0, 1).unsqueeze(1).to(x.dtype)
        c_lo, c_hi = _count_below(x, lo, ind_a), _count_below(x, hi, ind_b)
        fresh_a, fresh_b = torch.zeros_like(valid), torch.zeros_like(valid)
        for tau, c, from_lower in ((lo, c_lo, True), (hi, c_hi, False)):
            up, down = (c <= drop) & (c >= ca), (c > drop) & (c <= cb)
            a, ca, b, cb = _where(up, tau, a), torch.where(up, c, ca), _where(down, tau, b), torch.where(down, c, cb)
            fresh_a = torch.where(up, from_lower, fresh_a)
            fresh_b = torch.where(down, not from_lower, fresh_b)

    thr = a.squeeze(1).clone()  # rows with ca == drop: #(x < a) == drop, so keeping x >= a is exact
    cut = torch.full((rows,), vocab, dtype=torch.int64, device=x.device)
    band = cb - ca
    gather = valid & (ca != drop) & (band <= _MAX_GATHER)
    fallback = ~valid | (band > _MAX_GATHER)
    if bool(gather.any()):
        for r in (gather & ~(fresh_a & fresh_b)).nonzero().squeeze(1).tolist():  # a straddle missed
            torch.lt(x[r], a[r], out=ind_a[r])
            torch.lt(x[r], b[r], out=ind_b[r])
        idx = gather.nonzero().squeeze(1)
        member = ind_b.sub_(ind_a)  # 1 on a <= x < b
        thr[idx], cut[idx] = _rank_in_band(x, member, drop, idx, ca[idx], band[idx])
    if bool(fallback.any()):
        idx = fallback.nonzero().squeeze(1)
        thr[idx], cut[idx] = _exact_threshold(x[idx], drop)
    if stats is not None:
        for key, mask in (("separator", valid & (ca == drop)), ("gathered", gather), ("fallback", fallback)):
            stats[key] = stats.get(key, 0) + int(mask.sum())
    return thr, cut


def _where(cond: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(cond.unsqueeze(1), new, old)


def _rank_in_band(x, member, drop, idx, ca, band) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact (thr, cut) for rows idx whose threshold is the (drop - ca)-th smallest of their members."""
    vocab = x.shape[1]
    if vocab % _BLOCK:  # pad the rows to whole blocks (a copy, for uncommon vocabulary sizes)
        pad = (0, _BLOCK - vocab % _BLOCK)
        x, member = torch.nn.functional.pad(x[idx], pad), torch.nn.functional.pad(member[idx], pad)
        idx = torch.arange(idx.numel(), device=x.device)
    per_row = x.shape[1] // _BLOCK
    x_blocks, m_blocks = x.reshape(-1, _BLOCK), member.reshape(-1, _BLOCK)  # views: x is contiguous
    counts = m_blocks.sum(-1).view(-1, per_row).index_select(0, idx)
    hit_row, hit_block = (counts > 0).nonzero(as_tuple=True)  # row-major: positions ascend per row
    flat = idx[hit_row] * per_row + hit_block
    found = (m_blocks.index_select(0, flat) > 0).view(-1).nonzero().squeeze(1)
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
        scratch = [new(min(chunk, n), vocab, dtype=torch.float32) for _ in range(2 if drop else 0)]
        for start in range(0, n, chunk):
            sl = slice(start, start + chunk)
            x = _chunk(logits, sl, temperature, compute)
            e = buf[: x.shape[0]]
            m = x.amax(dim=-1, keepdim=True)
            low[sl] = _sampled_min(x)
            if drop:
                thr[sl], cut[sl] = _kept_threshold(x, drop, m, [s[: x.shape[0]] for s in scratch], stats)
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
