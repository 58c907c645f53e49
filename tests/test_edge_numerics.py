"""Exact edge cases of the numerics (issue 15, points 10 and 11): advantages of equal-reward groups are
exactly 0, and entropies with -inf logits (masked vocabularies) or overflowing ranges follow
0 * log 0 = 0 in value and gradient, on the C kernels and on the torch path."""
import math

import pytest
import torch

from aent_cli.algos import entropy as ent
from aent_cli.algos.advantages import consecutive_groups, drgrpo_advantages, grpo_advantages
from aent_cli.algos.entropy import clamped_entropy, full_entropy

NEG_INF = float("-inf")


# ---- advantages (point 10) -------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0.1, 0.35, 1.1, 0.7, -0.3, 1e-3, 123.456])
@pytest.mark.parametrize("estimator", [grpo_advantages, drgrpo_advantages])
def test_equal_reward_groups_get_exactly_zero(value, estimator):
    for group in (2, 3, 7, 8, 16):
        rewards = torch.full((2 * group,), value)
        got = estimator(rewards, consecutive_groups(2 * group, group))
        assert torch.equal(got, torch.zeros(2 * group)), (value, group)


def test_equal_rewards_reached_by_different_sums_are_equal():
    """1.1 as 0.1 + 1.0 (format + correct) and as 1.1 differ by an ulp in float32: still no push."""
    rewards = torch.tensor([0.1 + 1.0, 1.1, 1.1, torch.tensor(0.1) + torch.tensor(1.0)], dtype=torch.float32)
    assert torch.equal(grpo_advantages(rewards, consecutive_groups(len(rewards), 4)), torch.zeros(4))


def test_mixed_groups_keep_their_advantages():
    """Only equal groups are zeroed; the others equal the float64 definition."""
    rewards = torch.tensor([0.1] * 4 + [0.0, 1.1, 1.1, 0.1])
    got = grpo_advantages(rewards, consecutive_groups(len(rewards), 4))
    assert torch.equal(got[:4], torch.zeros(4))
    r = rewards[4:].double()
    ref = (r - r.mean()) / (r.std() + 1e-6)
    torch.testing.assert_close(got[4:].double(), ref, rtol=1e-6, atol=1e-7)
    assert got.dtype == torch.float32


# ---- entropy with -inf (point 11) ------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("entropy_path")  # conftest.py: C kernels and torch path


def value_and_grad(fn, x, weights=None):
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    (out * (weights if weights is not None else torch.ones_like(out))).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("fn", [full_entropy, lambda x: clamped_entropy(x, 0.0)], ids=["full", "clamped_p0"])
def test_issue_cases(fn):
    v, g = value_and_grad(fn, torch.tensor([[0.0, NEG_INF]]))
    assert v.tolist() == [0.0] and g.tolist() == [[0.0, 0.0]]
    v, g = value_and_grad(fn, torch.tensor([[0.0, 0.0, NEG_INF]]))
    torch.testing.assert_close(v, torch.tensor([math.log(2)]))
    assert g.tolist() == [[0.0, 0.0, 0.0]]  # equal logits: dH/dx = -p (x - E[x]) = 0
    v, g = value_and_grad(fn, torch.tensor([[3e38, -3e38]], dtype=torch.bfloat16))
    assert v.tolist() == [0.0] and g.tolist() == [[0.0, 0.0]]
    v, g = value_and_grad(fn, torch.tensor([[3e38, -3e38, 3e38]]))
    torch.testing.assert_close(v, torch.tensor([math.log(2)]))
    assert torch.isfinite(g).all()


def reference_on_finite(x: torch.Tensor, drop: int, weights: torch.Tensor):
    """Independent reference in float64: per row, only the finite logits, of which the
    max(drop - #(-inf), 0) lowest are dropped; the -inf positions get a gradient of 0."""
    values, grads = [], torch.zeros_like(x, dtype=torch.float64)
    for r in range(x.shape[0]):
        finite = torch.isfinite(x[r])
        sub = x[r][finite].double().requires_grad_(True)
        k = int((~finite).sum())
        extra = max(drop - k, 0)
        kept = sub
        if extra:
            keep_idx = torch.topk(sub.detach(), sub.numel() - extra).indices
            kept = sub[keep_idx]
        logp = torch.log_softmax(kept, -1)
        h = -(logp.exp() * logp).sum()
        (h * weights[r].double()).backward()
        values.append(h.detach())
        grads[r, finite] = sub.grad
    return torch.stack(values), grads


@pytest.mark.parametrize("vocab", [50, 20_000])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.6])
def test_masked_vocabulary_matches_reference(vocab, p):
    g = torch.Generator().manual_seed(vocab + int(100 * p))
    x = torch.randn(6, vocab, generator=g) * 3
    shares = [0.0, 0.05, 0.3, 0.5, 0.9, 0.99]  # one row without -inf, one almost all masked
    for r, share in enumerate(shares):
        x[r, torch.rand(vocab, generator=g) < share] = NEG_INF
        x[r, r] = 1.0  # at least one finite logit
    weights = torch.tensor([1.0, -0.5, 2.0, 0.3, 1.0, -1.0])
    drop = ent.num_dropped(vocab, p)
    v, grad = value_and_grad(lambda t: clamped_entropy(t, p, temperature=0.9), x, weights)
    ref_v, ref_g = reference_on_finite(x / 0.9, drop, weights)
    ref_g = ref_g / 0.9
    torch.testing.assert_close(v.double(), ref_v, rtol=1e-5, atol=2e-5)
    assert torch.isfinite(grad).all()
    assert torch.all(grad[torch.isneginf(x)] == 0)
    torch.testing.assert_close(grad.double(), ref_g, rtol=1e-4, atol=max(1e-5 * float(ref_g.abs().max()), 1e-12))


def test_huge_finite_range_matches_reference():
    """A logit far below the rest (-3e38, -1e30) has probability 0: value and gradient as without it."""
    x = torch.tensor([[0.0, -3e38, 1.0, 0.5], [2.0, -1e30, -1.0, 0.0]])
    v, grad = value_and_grad(full_entropy, x)
    ref_v, ref_g = reference_on_finite(x.masked_fill(x < -1e29, NEG_INF), 0, torch.ones(2))
    torch.testing.assert_close(v.double(), ref_v, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad.double(), ref_g, rtol=1e-5, atol=1e-6)
    assert grad[0, 1] == 0 and grad[1, 1] == 0
