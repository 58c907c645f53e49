"""Micro-batches by token budget (`engine.update.micro_batches`): bounded, in order, and the update
they accumulate equals the update of the whole mini-batch in one forward (same gradient, same
loss statistics), on groups whose responses differ widely in length."""
import pytest
import torch
from omegaconf import OmegaConf

from aent_cli.engine.torch_backend import TorchBackend
from aent_cli.engine.update import StepBatch, UpdateSettings, micro_batches, optimise
from aent_cli.models.logprobs import pack_sequences
from aent_cli.models.tiny import build_model, build_tokenizer

ALGO = OmegaConf.create({"advantage": "grpo", "policy_loss": "ppo_clip", "clip_eps_low": 0.2, "clip_eps_high": 0.2,
                         "loss_agg": "token_mean", "bonus": "clamped", "p": 0.33, "kl_coef": 0.0})
GROUP = 4


def _batch():
    g = torch.Generator().manual_seed(3)
    prompts = [[3, 4, 5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]]
    rows_p, rows_r = [], []
    for prompt, lengths in zip(prompts, ([30, 2, 5, 1], [3, 20, 4, 9], [2, 2, 25, 6])):
        for n in lengths:
            rows_p.append(prompt)
            rows_r.append(torch.randint(1, 30, (n,), generator=g).tolist())
    return pack_sequences(rows_p, rows_r, 0)


class Recording(TorchBackend):
    """Keeps the accumulated gradient at each optimiser step instead of stepping."""

    def __init__(self, model):
        super().__init__(model, torch.optim.SGD(model.parameters(), lr=0.0))
        self.grads, self.forwards = [], 0

    def prepare_forward(self, n_tokens, chunk):
        self.forwards += 1
        return 0

    def step(self, grad_clip):
        self.grads.append({n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None})
        return 0.0


def test_budget_bounds_tokens_and_keeps_order():
    batch = _batch()
    rows = torch.arange(batch.input_ids.shape[0])
    for budget in (1, 20, 40, 80):
        parts = micro_batches(batch, rows, max_rows=64, max_tokens=budget)
        assert torch.cat(parts).tolist() == rows.tolist()
        for part in parts:
            prompts = {tuple(batch.input_ids[r, :int(batch.response_start[r])].tolist()) for r in part.tolist()}
            tokens = sum(len(p) for p in prompts) + int(batch.response_mask[part].sum())
            assert tokens <= budget or len(part) == 1  # a longer row goes alone
    assert [len(p) for p in micro_batches(batch, rows, max_rows=5, max_tokens=0)] == [5, 5, 2]
    assert len(micro_batches(batch, rows, max_rows=64, max_tokens=10_000)) == 1


@pytest.mark.parametrize("budget", [1, 30, 60])
def test_split_update_equals_the_unsplit_one(budget):
    batch = _batch()
    advantages = torch.linspace(-1.5, 1.5, batch.input_ids.shape[0])
    results = []
    for tokens in (0, budget):
        model = build_model(build_tokenizer(), seed=7)
        backend = Recording(model)
        settings = UpdateSettings(temperature=0.9, logit_chunk=16, mini_batch_groups=3, micro_batch_size=64,
                                  ppo_epochs=1, grad_clip=1.0, max_response_length=32, micro_batch_tokens=tokens)
        update = optimise(model, backend, ALGO, StepBatch(batch, advantages), 0.03, settings)
        results.append((update, backend))
    (whole, one), (split, many) = results
    assert one.forwards == 1 and many.forwards > 1
    for key in ("pg_loss", "entropy_bonus", "clip_frac"):
        if key in whole.stats:
            assert split.stats[key] == pytest.approx(whole.stats[key], rel=1e-5, abs=1e-7), key
    for key in ("logp", "entropy", "clamped_entropy"):
        torch.testing.assert_close(split.measured[key], whole.measured[key], rtol=1e-5, atol=1e-6)
    for name, grad in one.grads[0].items():
        torch.testing.assert_close(many.grads[0][name], grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
