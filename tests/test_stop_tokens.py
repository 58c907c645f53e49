"""Stop tokens: a row ends at any of the model's end ids (tokenizer EOS, generation_config eos ids, the
chat template's end of turn), the same set in the lean sampler, `generate`, vLLM's parameters, the
`finished` flag and the log-prob mask. The model here emits a second stop id before it ever emits EOS."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from aent_cli.models.logprobs import pack_sequences
from char_tokenizer import build_char_tokenizer as build_tokenizer
from aent_cli.rollout import SamplingParams
from aent_cli.rollout.hf import HFRollout
from aent_cli.rollout.stops import cut_at_stop, end_of_turn_id, stop_token_ids
from aent_cli.rollout.vllm import sampling_kwargs, to_completion

PROMPTS = ["12+34=", "7+8*9=", "5=", "99+99*9="]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _llama(tokenizer, seed=3):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def second_stop(tokenizer):
    """A model whose generation config lists a second end id that it emits (greedily: first) and EOS
    that it never emits within 12 tokens; the second id."""
    model = _llama(tokenizer)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    greedy = HFRollout(model, tokenizer).generate(PROMPTS[:1], SamplingParams(n=1, temperature=0, max_new_tokens=12))
    first = greedy[0].completions[0]
    assert not first.finished and tokenizer.eos_token_id not in first.token_ids  # EOS alone never stops it
    second = first.token_ids[0]
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, second]
    return model, second


def _samples(model, tokenizer, params, lean, seed=5):
    torch.manual_seed(seed)
    groups = HFRollout(model, tokenizer, lean=lean).generate(PROMPTS, params)
    return [c for g in groups for c in g.completions], groups


def test_stop_ids_are_the_union(tokenizer, second_stop):
    model, second = second_stop
    eos = tokenizer.eos_token_id
    assert stop_token_ids(tokenizer) == (eos,)
    assert stop_token_ids(tokenizer, model) == (eos, second)
    model_int = _llama(tokenizer)
    model_int.generation_config.eos_token_id = 7  # an int, not a list
    assert stop_token_ids(tokenizer, model_int) == (eos, 7)


def test_chat_template_end_of_turn_is_a_stop(tokenizer):
    chat = build_tokenizer()
    chat.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    chat.chat_template = CHATML
    im_end = chat.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(chat) == im_end
    assert stop_token_ids(chat) == (chat.eos_token_id, im_end)
    assert end_of_turn_id(tokenizer) is None  # no chat template
    chat.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"  # nothing special after a turn
    assert end_of_turn_id(chat) is None


def test_greedy_row_stops_at_the_second_id(tokenizer, second_stop):
    model, second = second_stop
    for lean in (True, False):
        torch.manual_seed(0)
        out = HFRollout(model, tokenizer, lean=lean).generate(PROMPTS[:1], SamplingParams(n=1, temperature=0,
                                                                                        max_new_tokens=12))
        completion = out[0].completions[0]
        assert completion.token_ids == [second] and completion.finished


@pytest.mark.parametrize("params", [SamplingParams(n=8, temperature=1.5, max_new_tokens=12),
                                    SamplingParams(n=4, temperature=0.6, top_p=0.95, top_k=20, max_new_tokens=10)])
def test_lean_and_generate_stop_alike(tokenizer, second_stop, params):
    model, second = second_stop
    stops = {tokenizer.eos_token_id, second}
    lean, _ = _samples(model, tokenizer, params, True)
    reference, _ = _samples(model, tokenizer, params, False)
    assert [(c.token_ids, c.finished) for c in lean] == [(c.token_ids, c.finished) for c in reference]
    assert any(c.finished for c in lean)
    for c in lean:
        body = c.token_ids[:-1] if c.finished else c.token_ids
        assert not stops & set(body)  # nothing after the first stop id
        assert c.finished == (c.token_ids[-1] in stops)
        if not c.finished:
            assert len(c.token_ids) == params.max_new_tokens


def test_stop_token_is_in_the_log_prob_mask(tokenizer, second_stop):
    model, second = second_stop
    completions, groups = _samples(model, tokenizer, SamplingParams(n=4, temperature=1.5, max_new_tokens=12), True)
    prompt_ids = [g.prompt_ids for g in groups for _ in g.completions]
    batch = pack_sequences(prompt_ids, [c.token_ids for c in completions], tokenizer.pad_token_id)
    for b, c in enumerate(completions):
        assert int(batch.response_mask[b].sum()) == len(c.token_ids)
        if c.finished:
            assert int(batch.responses[b, len(c.token_ids) - 1]) in (tokenizer.eos_token_id, second)


def test_vllm_gets_the_other_stop_ids(tokenizer):
    params = SamplingParams(n=2, max_new_tokens=8)
    assert "stop_token_ids" not in sampling_kwargs(params)
    assert sampling_kwargs(params, [107])["stop_token_ids"] == [107]
    eos = tokenizer.eos_token_id
    stopped = to_completion([5, 6, 107], "stop", 107, tokenizer, [107])
    assert stopped.token_ids == [5, 6, 107] and stopped.finished
    dropped = to_completion([5, 6], "stop", 107, tokenizer, [107])  # a server that leaves the stop id out
    assert dropped.token_ids == [5, 6, 107] and dropped.finished
    at_eos = to_completion([5, 6], "stop", None, tokenizer, [107])
    assert at_eos.token_ids == [5, 6, eos]
    cut = to_completion([5, 6], "length", None, tokenizer, [107])
    assert cut.token_ids == [5, 6] and not cut.finished


def test_cut_at_stop():
    assert cut_at_stop([4, 9, 2, 9], {2, 9}) == ([4, 9], True)
    assert cut_at_stop([4, 5], {2}) == ([4, 5], False)


@pytest.mark.parametrize("lean", [True, False])
def test_progress_callback_counts_generated_tokens(tokenizer, second_stop, lean):
    model, _ = second_stop
    backend = HFRollout(model, tokenizer, lean=lean)
    counts = []
    backend.on_tokens = counts.append
    torch.manual_seed(1)
    out = backend.generate(PROMPTS[:2], SamplingParams(n=3, temperature=1.5, max_new_tokens=8))
    lengths = [len(c.token_ids) for g in out for c in g.completions]
    if lean:  # exactly the tokens of the completions
        assert sum(counts) == sum(lengths)
    else:  # generate: every row at every step
        assert counts == [6] * max(lengths)
