"""Per-position entropies of a softmax policy: the ordinary one (EntReg) and the clamped one (AEnt).

The definition is `reference_clamped_entropy` (first function below, ten lines of plain torch); the
rest of this module and the C kernels compute the same numbers fast, and tests/test_entropy*.py
check every path against that reference. clamped_entropy drops, at each position, the floor(p * V)
lowest logits (never all of them) and takes the entropy of the softmax re-normalised over the rest.
The kept set is a selection (no gradient through it), so d H~ / d x_i = -pi~_i (x_i - E_pi~[x]) on
kept tokens and exactly 0 on dropped ones. Ties at the threshold: the value does not depend on which
tied tokens are kept (they are equal); for the gradient the lowest-index tied tokens are the kept ones.

Both functions take logits of any leading shape, compute in fp32 (bf16/fp16 are upcast per chunk; fp64
stays fp64 so gradcheck can run), process `chunk_rows` rows at a time and save nothing of size [N, V]
for backward beyond the input itself: backward recomputes each chunk's probabilities from the logits
and a few numbers per row.

-inf logits (masked vocabularies, top-k / top-p filtered samplers) and rows whose range overflows
(bf16 [3e38, -3e38]) follow 0 * log 0 = 0: a token of probability 0 adds nothing to the value and gets
a gradient of exactly 0. The torch path handles such rows in its own passes (rows spanning more
than _WIDE_RANGE); with the C kernels, such rows (found by one min/max pass, ~1% of a call) go to
the torch path, and any other row whose value comes out non-finite there is computed again on it. A row needs at least one
finite logit; +inf or NaN logits give NaN.

On CPU, fp32 and bf16 logits go to fused C kernels (entropy_native.py, csrc/entropy.c) when a C
compiler is available. Otherwise, on CPU, the torch path below finds the kept set exactly, as
torch.kthvalue would, without sorting or selecting over the vocabulary (either costs several full
entropy passes): see select.kept_threshold. On accelerators, whose selection kernels are fast, it is
torch.kthvalue itself, with larger chunks. Speed and memory: benchmarks/bench_entropy.py.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from aent_cli.algos import entropy_native
from aent_cli.algos import entropy_select as select

DEFAULT_CHUNK_ROWS = 8  # CPU: the chunk's few [rows, V] fp32 buffers (5 MB each at V=152k) stay in cache
_ACCELERATOR_CHUNK_ELEMENTS = 1 << 26  # GPU: ~256 MB fp32 per buffer, enough rows to fill the device


def num_dropped(vocab_size: int, p: float) -> int:
    """floor(p * V) tokens are dropped, never all of them."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"clamping percentage p={p} must satisfy 0 <= p < 1")
    return min(int(math.floor(p * vocab_size)), vocab_size - 1)


def reference_clamped_entropy(logits: torch.Tensor, p: float, temperature: float = 1.0) -> torch.Tensor:
    """The definition every fast path below must equal, in plain torch and float64 ([..., V] -> [...]).

    Per position: drop the floor(p * V) least likely tokens, renormalise the softmax over the rest,
    take its entropy (p = 0: the ordinary entropy). Slow ([N, V] sorts and copies): for tests and
    benchmarks only. Ties at the threshold do not change the value; `clamped_entropy` keeps the
    lowest-index tied tokens, which decides its gradient (this one's follows torch.topk's choice).
    """
    x = logits.double() / temperature
    drop = num_dropped(x.shape[-1], p)
    if drop:
        lowest = torch.topk(x, drop, dim=-1, largest=False).indices
        x = x.scatter(-1, lowest, -math.inf)
    log_probs = torch.log_softmax(x, dim=-1)
    probs = log_probs.exp()
    return -(probs * log_probs.masked_fill(probs == 0, 0.0)).sum(-1)  # 0 * log 0 = 0 on dropped tokens


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------------
# Autograd: forward keeps per-row (log-normaliser, mean logit, thr, cut); backward recomputes per chunk.
# torch.exp is ~4-30x slower on arguments whose result is 0, subnormal or from -inf, so no exp here
# sees one: dropped tokens get exp(-87) (below the precision of a sum >= 1) in forward and a zero
# (x - mean) factor in backward, and a chunk whose logits reach below the floor (exact row minimum,
# from the same pass as the maximum) is clamped.
# --------------------------------------------------------------------------------------------------

_EXP_FLOOR = -87.0  # exp(-87) = 1.6e-38, the smallest fp32 power of e that is still a normal number
# A row whose logits span more than this holds -inf or values no softmax can weigh (|x| ~ 1e30): its
# mean and gradient factor are taken relative to the max with such tokens weighing exactly 0
# (0 * log 0 = 0), instead of 1e-38 * -inf = -inf or 0 * inf = NaN. Ordinary rows never get here.
_WIDE_RANGE = 1e6


def _chunk(logits: torch.Tensor, sl: slice, temperature: float, compute: torch.dtype) -> torch.Tensor:
    x = logits[sl]
    if x.dtype != compute:
        x = x.to(compute)
        return x.div_(temperature) if temperature != 1.0 else x
    return x / temperature if temperature != 1.0 else x


def _exp_(args: torch.Tensor, lowest: torch.Tensor) -> torch.Tensor:
    if select.on_cpu(args) and bool((lowest < _EXP_FLOOR).any()):  # a CPU-only slow path
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
            lowest, m = torch.aminmax(x, dim=-1, keepdim=True)  # one pass; the exact minimum
            low[sl] = lowest
            if drop:
                if bool(torch.isneginf(lowest).any()):  # the sampled bracket assumes finite logits
                    thr[sl], cut[sl] = select.exact_threshold(x, drop)
                else:
                    thr[sl], cut[sl] = select.kept_threshold(x, drop, m, scratch[:, : x.shape[0]], stats)
                select.masked_into(x, thr[sl], cut[sl], (m + _EXP_FLOOR).squeeze(1), e).sub_(m)
                _exp_(e, thr[sl].unsqueeze(1) - m)
            else:
                _exp_(torch.sub(x, m, out=e), low[sl] - m)
            z = e.sum(-1, keepdim=True)
            log_z[sl] = m + torch.log(z)
            if bool((lowest < m - _WIDE_RANGE).any()):
                # -inf logits or a range beyond exp's: E[x] relative to the max, tokens below the
                # floor (probability < 1e-38) weighing exactly 0: 0 * log 0 = 0, never -inf * 0 or
                # an overflowing sum
                rel = torch.threshold_(torch.sub(x, m), _EXP_FLOOR, 0.0)
                centre = torch.linalg.vecdot(e, rel).unsqueeze(-1) / z
                mean[sl] = m + centre
                out[sl] = (torch.log(z) - centre).squeeze(-1)
            else:
                mean[sl] = torch.linalg.vecdot(e, x).unsqueeze(-1) / z
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
                select.masked_into(x, thr[sl], cut[sl], mean[sl].squeeze(1), g)
                x = g
            if bool((low[sl] < log_z[sl] - _WIDE_RANGE).any()):  # -inf / overflowing ranges: tokens
                floor = log_z[sl] + _EXP_FLOOR  # of probability < 1e-38 get a zero (x - mean) factor
                x = torch.where(x >= floor, x, mean[sl], out=g)
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


class _NativeEntropy(torch.autograd.Function):
    """The fused C kernels (entropy_native.py): same values, kept sets and gradients as _Entropy."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, drop: int, temperature: float, stats) -> torch.Tensor:
        positions = select.sample_positions(rows.shape[1], rows.device)
        out, log_z, mean, thr, cut = entropy_native.forward(rows, drop, temperature, positions, stats=stats)
        ctx.save_for_backward(rows, log_z, mean, thr, cut)
        ctx.temperature = temperature
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        rows, log_z, mean, thr, cut = ctx.saved_tensors
        grad = entropy_native.backward(rows, ctx.temperature, grad_out, log_z, mean, thr, cut)
        silent = grad_out == 0  # rows recomputed on the torch path (non-finite here): 0, not NaN * 0
        if bool(silent.any()):
            grad[silent] = 0
        return grad, None, None, None


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
    if not entropy_native.supports(rows):
        return _Entropy.apply(rows, drop, float(temperature), int(chunk_rows), stats).reshape(lead)
    lowest, highest = torch.aminmax(rows.detach(), dim=1)  # ~1% of a native call
    wide = lowest < highest - _WIDE_RANGE  # -inf / overflowing rows: the C kernels give NaN there
    if bool(wide.any()):
        return _split_rows(rows, wide, drop, float(temperature), int(chunk_rows), stats).reshape(lead)
    out = _NativeEntropy.apply(rows, drop, float(temperature), stats)
    bad = ~torch.isfinite(out.detach())
    if bool(bad.any()):  # -inf logits or an overflowing range: those rows again on the torch path
        idx = bad.nonzero().squeeze(1)
        fixed = _Entropy.apply(rows.index_select(0, idx), drop, float(temperature), int(chunk_rows), stats)
        out = out.masked_fill(bad, 0.0).index_add(0, idx, fixed.to(out.dtype))
    return out.reshape(lead)


def _split_rows(rows: torch.Tensor, wide: torch.Tensor, drop: int, temperature: float, chunk_rows: int,
                stats) -> torch.Tensor:
    """[N] entropies: rows where `wide` on the torch path, the others on the C kernels."""
    idx_wide, idx_rest = wide.nonzero().squeeze(1), (~wide).nonzero().squeeze(1)
    out = _Entropy.apply(rows.index_select(0, idx_wide), drop, temperature, chunk_rows, stats)
    result = torch.zeros(rows.shape[0], dtype=out.dtype, device=rows.device).index_add(0, idx_wide, out)
    if idx_rest.numel():
        rest = _NativeEntropy.apply(rows.index_select(0, idx_rest).contiguous(), drop, temperature, stats)
        result = result.index_add(0, idx_rest, rest.to(out.dtype))
    return result


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

