"""The lean sampling loop against transformers itself: same logits as the model's forward, same
logits warpers as `generate`, and, from the same RNG state, the same sampled tokens as `generate`."""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from aent_cli.models.tiny import build_model
from char_tokenizer import build_char_tokenizer as build_tokenizer
from aent_cli.rollout import SamplingParams
from aent_cli.rollout.hf import HFRollout
from aent_cli.rollout.lean import LeanDecoder, _Cache, filter_logits, lean_supported

PROMPTS = ["12+34=", "7+8*9=", "5=", "99+99*9="]  # different lengths: left padding matters


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def qwen(tokenizer):
    return build_model(tokenizer, seed=1).eval()  # the embedded architecture, random weights


@pytest.fixture(scope="module")
def llama(tokenizer):
    torch.manual_seed(2)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64,
                         rope_theta=500.0, attention_bias=True, tie_word_embeddings=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config).eval()


def _sample(model, tokenizer, params, lean, seed=7):
    torch.manual_seed(seed)
    groups = HFRollout(model, tokenizer, lean=lean).generate(PROMPTS, params)
    return [(c.token_ids, c.finished, c.text) for g in groups for c in g.completions]


@pytest.mark.parametrize("name", ["qwen", "llama"])
def test_supported_architectures(name, request):
    assert lean_supported(request.getfixturevalue(name))


def test_other_architectures_fall_back_to_generate(tokenizer):
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                                      eos_token_id=tokenizer.eos_token_id)).eval()
    assert not lean_supported(gpt2)
    out = HFRollout(gpt2, tokenizer).generate(PROMPTS[:2], SamplingParams(n=3, max_new_tokens=5))
    assert [len(g.completions) for g in out] == [3, 3]
    assert all(0 < len(c.token_ids) <= 5 for g in out for c in g.completions)


@pytest.mark.parametrize("name", ["qwen", "llama"])
def test_logits_match_the_model_forward(name, request, tokenizer):
    model = request.getfixturevalue(name)
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    ids, attn = enc["input_ids"], enc["attention_mask"]
    extra = torch.tensor([[5], [9], [12], [3]])
    dec = LeanDecoder(model)
    width = ids.shape[1]
    rope = dec.rope_table(width + 1, "cpu")
    cache = _Cache(len(dec.layers), len(PROMPTS), dec.kv_heads, width + 1, dec.head_dim, dec.head.weight)
    valid = attn.bool()
    mask = (torch.ones(width, width, dtype=torch.bool).tril() & valid[:, None, :]) | torch.eye(width, dtype=torch.bool)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        prefill = dec.forward(ids, positions, cache, 0, mask.unsqueeze(1), rope)
        sees = torch.cat([valid, torch.ones(len(PROMPTS), 1, dtype=torch.bool)], 1)[:, None, None, :]
        step = dec.forward(extra, positions[:, -1:] + 1, cache, width, sees, rope)
        full_ids, full_attn = torch.cat([ids, extra], 1), torch.cat([attn, torch.ones_like(extra)], 1)
        ref = model(input_ids=full_ids, attention_mask=full_attn,
                    position_ids=(full_attn.cumsum(-1) - 1).clamp(min=0)).logits.float()
    torch.testing.assert_close(prefill, ref[:, -2], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(step, ref[:, -1], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, -1, 1.0), (0.6, 20, 0.95), (1.3, 3, 1.0), (0.7, -1, 0.5)])
def test_filter_matches_generate_warpers(temperature, top_k, top_p):
    torch.manual_seed(0)
    scores = torch.randn(16, 58) * 3
    scores[0, :10] = scores[0, 10]  # ties at the cut
    expected = scores
    if temperature != 1.0:
        expected = TemperatureLogitsWarper(temperature)(None, expected)
    if top_k > 0:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1.0:
        expected = TopPLogitsWarper(top_p)(None, expected)
    assert torch.equal(filter_logits(scores, temperature, top_k, top_p), expected)


@pytest.mark.parametrize("name", ["qwen", "llama"])
@pytest.mark.parametrize("params", [
    SamplingParams(n=8, temperature=2.0, max_new_tokens=16),  # hot: some rows emit EOS, some are cut
    SamplingParams(n=4, temperature=0.6, top_p=0.95, top_k=20, max_new_tokens=12),  # the paper's eval sampling
    SamplingParams(n=2, temperature=0.0, max_new_tokens=10),  # greedy
])
def test_same_samples_as_generate(name, params, request, tokenizer):
    model = request.getfixturevalue(name)
    lean, reference = _sample(model, tokenizer, params, True), _sample(model, tokenizer, params, False)
    assert lean == reference
    assert len(lean) == len(PROMPTS) * params.n


def test_completions_stop_at_eos_and_keep_training_mode(qwen, tokenizer):
    params = SamplingParams(n=8, temperature=2.0, max_new_tokens=16)
    qwen.train()
    try:
        samples = _sample(qwen, tokenizer, params, True, seed=3)
        assert qwen.training
    finally:
        qwen.eval()
    eos = tokenizer.eos_token_id
    finished = [s for s in samples if s[1]]
    cut = [s for s in samples if not s[1]]
    assert finished and cut  # both kinds occur at this temperature
    for ids, done, text in samples:
        assert len(ids) <= params.max_new_tokens
        assert (eos in ids) == done
        if done:
            assert ids.index(eos) == len(ids) - 1  # nothing after EOS
        else:
            assert len(ids) == params.max_new_tokens
        assert text == tokenizer.decode(ids, skip_special_tokens=True)


def test_max_batch_splits_whole_prompt_groups(qwen, tokenizer):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=6)
    out = HFRollout(qwen, tokenizer, max_batch=4).generate(PROMPTS, params)
    assert [g.prompt for g in out] == PROMPTS
    assert [len(g.completions) for g in out] == [3] * len(PROMPTS)
    assert all(g.prompt_ids == tokenizer.encode(g.prompt, add_special_tokens=False) for g in out)


@pytest.mark.parametrize("name", ["qwen", "llama"])
def test_unfused_projections_sample_the_same(name, request, tokenizer, monkeypatch):
    """Models above the fusion threshold run q/k/v and gate/up as separate matmuls."""
    import aent_cli.rollout.lean as lean

    model = request.getfixturevalue(name)
    params = SamplingParams(n=4, temperature=1.5, max_new_tokens=10)
    fused = _sample(model, tokenizer, params, True)
    monkeypatch.setattr(lean, "_FUSE_BELOW_PARAMS", 0)
    assert LeanDecoder(model).fused is None
    assert _sample(model, tokenizer, params, True) == fused == _sample(model, tokenizer, params, False)


@pytest.mark.parametrize("first_room,compact_at", [(1, 0.75), (3, 1.0), (2, 0.0), (64, 0.5)])
def test_cache_growth_and_compaction_sample_the_same(qwen, tokenizer, monkeypatch, first_room, compact_at):
    """However the cache grows (doubling from `first_room` new tokens) and whenever finished rows are
    dropped (at every finish: 1.0; only when the cache grows: 0.0), the samples are generate's."""
    import aent_cli.rollout.lean as lean

    params = SamplingParams(n=8, temperature=2.0, max_new_tokens=16)  # rows finish at different steps
    reference = _sample(qwen, tokenizer, params, False)
    monkeypatch.setattr(lean, "_FIRST_ROOM", first_room)
    monkeypatch.setattr(lean, "_COMPACT_AT", compact_at)
    assert _sample(qwen, tokenizer, params, True) == reference
