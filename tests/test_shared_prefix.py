"""The training forward that computes each distinct prompt once (`shared_prefix_hidden`) against
the transformers forward over every padded prompt + response: same log-probs, entropies and
gradients, on groups of responses of different lengths behind prompts of different lengths."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import aent_cli.models.logprobs as logprobs
from aent_cli.models.llama_family import shared_prefix_hidden
from aent_cli.models.logprobs import pack_sequences, response_token_stats
from aent_cli.models.tiny import build_model, build_tokenizer

PAD = 0


@pytest.fixture(scope="module")
def qwen():
    return build_model(build_tokenizer(), seed=4)


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(5)
    return LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
                                        max_position_embeddings=64, tie_word_embeddings=False, pad_token_id=PAD))


def _batch():
    g = torch.Generator().manual_seed(0)
    prompts = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]]
    rows_p, rows_r = [], []
    for prompt, lengths in zip(prompts, ([4, 1, 6], [3, 3], [2, 5, 7, 1])):  # groups of 3, 2 and 4 responses
        for n in lengths:
            rows_p.append(prompt)
            rows_r.append(torch.randint(1, 30, (n,), generator=g).tolist())
    return pack_sequences(rows_p, rows_r, PAD)


def _stats(model, batch, shared: bool, monkeypatch):
    monkeypatch.setattr(logprobs, "shared_prefix_hidden",
                        shared_prefix_hidden if shared else (lambda model, batch: None))
    model.train()
    model.zero_grad(set_to_none=True)
    stats = response_token_stats(model, batch, temperature=0.8, p=0.3, want_full=True, want_clamped=True)
    weights = torch.linspace(-1, 1, stats["logp"].numel()).view_as(stats["logp"])
    ((stats["logp"] * weights).sum() + stats["entropy"].sum() - stats["clamped_entropy"].sum()).backward()
    return ({k: v.detach() for k, v in stats.items()},
            {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("name", ["qwen", "llama"])
def test_same_numbers_and_gradients_as_the_full_forward(name, request, monkeypatch):
    model, batch = request.getfixturevalue(name), _batch()
    assert shared_prefix_hidden(model, batch) is not None  # the path under test is taken
    got, got_grad = _stats(model, batch, True, monkeypatch)
    want, want_grad = _stats(model, batch, False, monkeypatch)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-5)
    assert (got["logp"][batch.response_mask == 0] == 0).all()
    assert got_grad.keys() == want_grad.keys()
    for key in want_grad:
        torch.testing.assert_close(got_grad[key], want_grad[key], atol=1e-5, rtol=1e-4)


def test_hidden_rows_follow_the_response_mask(qwen):
    batch = _batch()
    with torch.no_grad():
        hidden = shared_prefix_hidden(qwen, batch)
    assert hidden.shape == (int(batch.response_mask.sum()), qwen.config.hidden_size)


def test_falls_back_where_it_does_not_apply(qwen):
    batch = _batch()
    one_token = pack_sequences([[3, 4], [5]], [[7], [8]], PAD)
    assert shared_prefix_hidden(qwen, one_token) is None  # nothing but the prompt's last position
    qwen.gradient_checkpointing_enable()
    try:
        assert shared_prefix_hidden(qwen, batch) is None  # keep the memory behaviour asked for
    finally:
        qwen.gradient_checkpointing_disable()
    assert shared_prefix_hidden(qwen, batch) is not None


@pytest.mark.parametrize("slack", [1.0, 1.3, 1e9], ids=["a bucket per size", "default buckets", "one bucket"])
def test_padding_free_buckets_give_the_same_numbers(qwen, slack, monkeypatch):
    """However segments are bucketed (one SDPA call each, padded to its largest), the packed forward
    equals the transformers forward over every padded row, gradients included."""
    import aent_cli.models.packing as packing

    monkeypatch.setattr(packing, "BUCKET_SLACK", slack)
    batch = _batch()
    layout = packing.pack_layout(batch)
    n_real = 5 + 2 + 4 + sum(max(n - 1, 0) for n in (4, 1, 6, 3, 3, 2, 5, 7, 1))
    assert layout.token_ids.numel() == n_real  # 3 distinct prompts once + response inputs: no padding
    if slack == 1.0:
        assert len(layout.buckets) > 3 and any(b.valid is None for b in layout.buckets)
    if slack == 1e9:
        assert len(layout.buckets) == 1 and layout.buckets[0].valid is not None
    got, got_grad = _stats(qwen, batch, True, monkeypatch)
    want, want_grad = _stats(qwen, batch, False, monkeypatch)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-5)
    for key in want_grad:
        torch.testing.assert_close(got_grad[key], want_grad[key], atol=1e-5, rtol=1e-4)
