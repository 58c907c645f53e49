"""Memory-bounded log-probs and entropies (`response_token_stats`) against the naive computation:
one unpadded forward per sequence, its full logits, log_softmax + gather, the full entropy and the
clamped entropy from a sort. Values and gradients must agree for every chunk size, on both forward
paths (the shared-prefix one, and the module-call one that ZeRO-3 lockstep forces with
min_chunks, empty chunks included) and both LM-head paths (checkpointed per chunk at V = 151,936,
kept whole at a small V)."""
from __future__ import annotations

import math

import pytest
import torch

from aent_cli.models.logprobs import pack_sequences, response_token_stats

TEMPERATURE, P = 0.7, 0.33


def _model(vocab: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    return Qwen2ForCausalLM(config).float()


def _batch(vocab: int):
    """Two GRPO-style groups (shared prompts) with responses of different lengths."""
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (5, 8)]
    lengths = [6, 1, 9, 4]
    responses = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]
    return pack_sequences([prompts[0], prompts[0], prompts[1], prompts[1]], responses, pad_id=0), prompts, responses


def _clamped_reference(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Entropy of the softmax over the top V - floor(p V) logits of each row (kept set by sort)."""
    keep = logits.shape[-1] - math.floor(p * logits.shape[-1])
    kept = logits.sort(dim=-1, descending=True).values[..., :keep]
    logq = torch.log_softmax(kept, dim=-1)
    return -(logq.exp() * logq).sum(-1)


def _naive(model, prompts, responses):
    """Per-token (logp, entropy, clamped) lists, one unpadded forward per sequence."""
    rows = []
    for prompt, response in zip([prompts[0], prompts[0], prompts[1], prompts[1]], responses):
        ids = torch.tensor([prompt + response])
        logits = model(input_ids=ids).logits[0].float() / TEMPERATURE
        at = logits[len(prompt) - 1:len(prompt) - 1 + len(response)]  # position t predicts token t + 1
        logp_all = torch.log_softmax(at, dim=-1)
        logp = logp_all.gather(-1, torch.tensor(response)[:, None]).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        rows.append((logp, entropy, _clamped_reference(at, P)))
    return rows


def _weights(responses):
    """Fixed random per-token weights for a scalar loss, so misplaced tokens change the gradient."""
    g = torch.Generator().manual_seed(2)
    return [torch.randn(3, len(r), generator=g) for r in responses]


def _loss_naive(rows, weights):
    return sum((w[0] * lp + w[1] * ent + w[2] * cl).sum() for (lp, ent, cl), w in zip(rows, weights))


def _loss_chunked(stats, weights, mask):
    total = 0.0
    for b, w in enumerate(weights):
        n = w.shape[1]
        assert mask[b, :n].all() and not mask[b, n:].any()
        total = total + (w[0] * stats["logp"][b, :n] + w[1] * stats["entropy"][b, :n]
                         + w[2] * stats["clamped_entropy"][b, :n]).sum()
    return total


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module", params=[151_936, 512], ids=["V=151936 checkpointed", "V=512 whole"])
def case(request):
    model = _model(request.param)
    batch, prompts, responses = _batch(request.param)
    weights = _weights(responses)
    model.zero_grad()
    rows = _naive(model, prompts, responses)
    _loss_naive(rows, weights).backward()
    return model, batch, rows, weights, _grads(model)


@pytest.mark.parametrize("chunk", [1, 7, 4096])
@pytest.mark.parametrize("min_chunks", [0, 5], ids=["shared-prefix path", "module path, padded chunks"])
def test_chunked_stats_and_gradients_equal_the_full_logits(case, chunk, min_chunks):
    model, batch, rows, weights, want_grads = case
    model.zero_grad()
    stats = response_token_stats(model, batch, TEMPERATURE, P, want_full=True, want_clamped=True, chunk=chunk,
                                 min_chunks=min_chunks, lockstep=min_chunks > 0)
    mask = batch.response_mask.bool()
    for key, index in (("logp", 0), ("entropy", 1), ("clamped_entropy", 2)):
        for b, row in enumerate(rows):
            torch.testing.assert_close(stats[key][b, :row[index].shape[0]], row[index].detach(),
                                       rtol=1e-5, atol=2e-5, msg=lambda m: f"{key} row {b}: {m}")
        assert (stats[key][~mask] == 0).all()
    _loss_chunked(stats, weights, mask).backward()
    got = _grads(model)
    assert got.keys() == want_grads.keys()
    for name, want in want_grads.items():  # fp32 sums over 152k logits: tolerance scaled to the tensor
        torch.testing.assert_close(got[name], want, rtol=1e-3, atol=1e-4 * float(want.abs().max()),
                                   msg=lambda m: f"grad {name}: {m}")


def test_measurement_without_grad_equals_the_differentiable_values(case):
    """The no-grad path (old log-probs, measured entropies) and the detached-measurement branch
    (an entropy not asked for as differentiable) give the same numbers."""
    model, batch, rows, _, _ = case
    with torch.no_grad():
        measured = response_token_stats(model, batch, TEMPERATURE, P, chunk=7)
    partial = response_token_stats(model, batch, TEMPERATURE, P, want_full=False, want_clamped=True, chunk=7)
    assert not partial["entropy"].requires_grad and partial["clamped_entropy"].requires_grad
    for key in ("logp", "entropy", "clamped_entropy"):
        torch.testing.assert_close(partial[key].detach(), measured[key], rtol=1e-6, atol=1e-6)
    for b, (logp, _, _) in enumerate(rows):
        torch.testing.assert_close(measured["logp"][b, :logp.shape[0]], logp.detach(), rtol=1e-5, atol=2e-5)


def test_checkpointed_lm_head_gives_the_same_numbers_and_gradients(case, monkeypatch):
    """The per-chunk recomputed LM head (taken once a forward's logits exceed the kept-whole bound)
    against the naive computation, at both vocabulary sizes."""
    import aent_cli.models.logprobs as logprobs

    monkeypatch.setattr(logprobs, "_UNCHECKPOINTED_ELEMENTS", 0)
    test_chunked_stats_and_gradients_equal_the_full_logits(case, chunk=7, min_chunks=0)
