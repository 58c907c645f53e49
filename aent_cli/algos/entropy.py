"""Per-position entropies of a softmax policy: the ordinary one (EntReg) and the clamped one (AEnt).

clamped_entropy keeps, at each position, the V - floor(p * V) highest logits and takes the entropy
of the softmax re-normalised over them. The kept set is a selection (no gradient through it), so
d H~ / d x_i = -pi~_i (x_i - E_pi~[x]) on kept tokens and exactly 0 on dropped ones.

Both functions work on rows of any leading shape in fp32 (bf16/fp16 inputs are upcast per chunk;
fp64 stays fp64 so gradcheck can run),
process a fixed number of rows at a time, and save nothing of size [N, V] for backward beyond the
input itself: backward recomputes each chunk's softmax from the logits and a few per-row numbers.
"""
from __future__ import annotations

import math

import torch

from aent_cli.algos.registry import ENTROPY_BONUSES, register

DEFAULT_CHUNK_ROWS = 256


def num_dropped(vocab_size: int, p: float) -> int:
    """floor(p * V) tokens are dropped, never all of them."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"clamping percentage p={p} must satisfy 0 <= p < 1")
    return min(int(math.floor(p * vocab_size)), vocab_size - 1)


def _kth_largest(x: torch.Tensor, keep: int) -> torch.Tensor:
    """Per row, the keep-th largest value (the smallest kept logit)."""
    return torch.kthvalue(x, x.shape[-1] - keep + 1, dim=-1, keepdim=True).values


def _row_stats(x: torch.Tensor, keep: int):
    """Per-row threshold, tie count to keep at it, max, log Z and E[x] of the kept distribution."""
    vocab = x.shape[-1]
    if keep == vocab:
        m = x.amax(dim=-1, keepdim=True)
        e = torch.exp(x - m)
        z = e.sum(-1, keepdim=True)
        ex = (e * x).sum(-1, keepdim=True) / z
        return None, None, m, torch.log(z), ex
    threshold = _kth_largest(x, keep)
    above = x > threshold
    n_above = above.sum(-1, keepdim=True)
    ties_kept = (keep - n_above).to(x.dtype)  # >= 1 copies of the threshold value are kept
    m = x.amax(dim=-1, keepdim=True)
    e = torch.where(above, torch.exp(x - m), torch.zeros((), dtype=x.dtype))
    e_t = torch.exp(threshold - m) * ties_kept
    z = e.sum(-1, keepdim=True) + e_t
    ex = ((e * x).sum(-1, keepdim=True) + e_t * threshold) / z
    return threshold, ties_kept, m, torch.log(z), ex


def _kept_mask(x: torch.Tensor, threshold: torch.Tensor, ties_kept: torch.Tensor) -> torch.Tensor:
    """Boolean kept set; among logits tied at the threshold, the lowest indices are the kept ones."""
    above = x > threshold
    tied = x == threshold
    n_tied = tied.sum(-1, keepdim=True)
    partial = (n_tied.to(x.dtype) > ties_kept).squeeze(-1)
    if not bool(partial.any()):
        return above | tied
    mask = above | tied
    rows = partial.nonzero(as_tuple=True)[0]
    rank = torch.cumsum(tied[rows].to(torch.int32), dim=-1)
    mask[rows] = above[rows] | (tied[rows] & (rank <= ties_kept[rows].to(torch.int32)))
    return mask


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


class _Entropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, keep: int, temperature: float, chunk: int) -> torch.Tensor:
        n, vocab = logits.shape
        compute = _compute_dtype(logits)
        out = torch.empty(n, dtype=compute, device=logits.device)
        thresholds, ties, shifts, log_zs, means = [], [], [], [], []
        for start in range(0, n, chunk):
            x = logits[start:start + chunk].to(compute) / temperature
            threshold, ties_kept, m, log_z, ex = _row_stats(x, keep)
            out[start:start + chunk] = (m + log_z - ex).squeeze(-1)
            shifts.append(m)
            log_zs.append(log_z)
            means.append(ex)
            if threshold is not None:
                thresholds.append(threshold)
                ties.append(ties_kept)
        cat = lambda parts: torch.cat(parts) if parts else torch.empty(0, 1, device=logits.device)  # noqa: E731
        ctx.save_for_backward(logits, cat(shifts), cat(log_zs), cat(means), cat(thresholds), cat(ties))
        ctx.keep, ctx.temperature, ctx.chunk = keep, temperature, chunk
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, shifts, log_zs, means, thresholds, ties = ctx.saved_tensors
        n, vocab = logits.shape
        clamped = ctx.keep < vocab
        compute = _compute_dtype(logits)
        grad = torch.empty_like(logits)
        for start in range(0, n, ctx.chunk):
            sl = slice(start, start + ctx.chunk)
            x = logits[sl].to(compute) / ctx.temperature
            prob = torch.exp(x - shifts[sl] - log_zs[sl])
            if clamped:
                prob = prob * _kept_mask(x, thresholds[sl], ties[sl])
            g = -prob * (x - means[sl]) * (grad_out[sl].to(compute).unsqueeze(-1) / ctx.temperature)
            grad[sl] = g.to(logits.dtype)
        return grad, None, None, None


def _apply(logits: torch.Tensor, keep_of_vocab, temperature: float, chunk_rows: int) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    lead, vocab = logits.shape[:-1], logits.shape[-1]
    rows = logits.reshape(-1, vocab)
    if rows.shape[0] == 0:
        return torch.zeros(lead, dtype=_compute_dtype(logits), device=logits.device)
    keep = keep_of_vocab(vocab)
    return _Entropy.apply(rows, keep, float(temperature), int(chunk_rows)).reshape(lead)


def full_entropy(logits: torch.Tensor, temperature: float = 1.0, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) over the whole vocabulary, per position (fp32)."""
    return _apply(logits, lambda vocab: vocab, temperature, chunk_rows)


def clamped_entropy(
    logits: torch.Tensor, p: float, temperature: float = 1.0, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> torch.Tensor:
    """Entropy of the softmax re-normalised over all but the floor(p * V) lowest logits, per position."""
    return _apply(logits, lambda vocab: vocab - num_dropped(vocab, p), temperature, chunk_rows)


register(ENTROPY_BONUSES, "full")(lambda logits, p=0.0, temperature=1.0: full_entropy(logits, temperature))
register(ENTROPY_BONUSES, "clamped")(clamped_entropy)
