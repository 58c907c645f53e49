"""The paper's Figure 1 and its entropy-bias argument on a softmax bandit (one state, V tokens).

Every expected number is computed here in closed form (float64) and compared with what the library's
bonuses (full_entropy / clamped_entropy, differentiated by autograd) produce.
"""
import math

import pytest
import torch

from aent_cli.algos.entropy import clamped_entropy, full_entropy

V = 1000
SAMPLED = [0, 1, 2, 3]  # high-probability (~46% together), suboptimal, sampled and reinforced
OPTIMAL = 4  # low probability, never sampled
TAIL = slice(5, V)  # a long tail of low-probability tokens (~53% together)
P_DROP_TAIL = 0.995  # floor(0.995 * 1000) = 995: exactly the tail is dropped


@pytest.fixture(autouse=True)
def _float64_default():
    """The bandits are tiny; float64 keeps comparisons tight. Set per test (not at import, which
    would leak into every module pytest collects after this one)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def initial_logits() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    theta = -3.0 - 0.5 * torch.rand(V, generator=g, dtype=torch.float64)
    theta[SAMPLED] = torch.tensor([3.0, 2.5, 2.0, 1.5], dtype=torch.float64)
    theta[OPTIMAL] = 0.0
    return theta


def entropy_grad(theta: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """d/dtheta of the entropy of softmax(theta) renormalised on `kept`: -pi~ (log pi~ + H~), 0 elsewhere."""
    logp = torch.log_softmax(theta.masked_fill(~kept, -math.inf), 0)
    pi = logp.exp()
    h = -(pi * logp.masked_fill(~kept, 0.0)).sum()
    return torch.where(kept, -pi * (logp + h), torch.zeros_like(theta))


def one_step(bonus: str, lam: float = 0.5, lr: float = 1.0) -> torch.Tensor:
    """theta + lr * grad(L_PO + lam * bonus), by autograd through the library's bonus."""
    theta = initial_logits().requires_grad_(True)
    objective = torch.log_softmax(theta, 0)[SAMPLED].sum()  # REINFORCE, advantage 1 on each sampled token
    if bonus == "full":
        objective = objective + lam * full_entropy(theta)
    elif bonus == "clamped":
        objective = objective + lam * clamped_entropy(theta, P_DROP_TAIL)
    objective.backward()
    return (theta + lr * theta.grad).detach()


def expected_step(bonus: str, lam: float = 0.5, lr: float = 1.0) -> torch.Tensor:
    theta = initial_logits()
    pi = torch.softmax(theta, 0)
    onehot = torch.zeros(V)
    onehot[SAMPLED] = 1.0
    grad = onehot - len(SAMPLED) * pi  # d/dtheta sum_a log pi_a
    everything = torch.ones(V, dtype=torch.bool)
    if bonus == "full":
        grad = grad + lam * entropy_grad(theta, everything)
    elif bonus == "clamped":
        kept = everything.clone()
        kept[TAIL] = False
        grad = grad + lam * entropy_grad(theta, kept)
    return theta + lr * grad


@pytest.mark.parametrize("bonus", ["none", "full", "clamped"])
def test_one_step_matches_closed_form(bonus):
    torch.testing.assert_close(one_step(bonus), expected_step(bonus), rtol=1e-10, atol=1e-12)


def test_figure1_one_step():
    before = torch.softmax(initial_logits(), 0)[OPTIMAL]
    none, full, clamped = (one_step(b) for b in ("none", "full", "clamped"))
    prob = lambda theta: torch.softmax(theta, 0)[OPTIMAL]  # noqa: E731
    # No bonus: reinforcing the sampled suboptimal tokens squeezes the optimal one down.
    assert prob(none) < before
    # Clamped bonus: the optimal token ends higher than without a bonus ...
    assert prob(clamped) > prob(none)
    # ... while the dropped tail gets exactly zero gradient from it.
    assert torch.equal(clamped[TAIL], none[TAIL])
    # Ordinary bonus: every tail logit ends higher than without a bonus.
    assert torch.all(full[TAIL] > none[TAIL])
    # ... and the tail's total probability grows, the mass the clamped bonus leaves alone.
    tail_mass = lambda theta: torch.softmax(theta, 0)[TAIL].sum()  # noqa: E731
    assert tail_mass(full) > tail_mass(none)


# ---- the regularised optimum and its bias ----------------------------------------------------------

LAM = 0.5
KEPT = 5  # the kept set, held fixed as V grows


def bandit_rewards(vocab: int) -> torch.Tensor:
    r = torch.zeros(vocab)
    r[:KEPT] = torch.tensor([1.0, 0.8, 0.7, 0.6, 0.5])  # token 0 is the best
    return r


def drop_all_but_kept(vocab: int) -> float:
    return (vocab - KEPT + 0.5) / vocab  # floor(p * V) = V - KEPT


def ascend(vocab: int, bonus: str, steps: int = 1500, lr: float = 5.0) -> torch.Tensor:
    """Gradient ascent on E_pi[r] + LAM * bonus from near-uniform logits; returns pi."""
    r = bandit_rewards(vocab)
    theta = (0.01 * r).requires_grad_(True)  # distinct logits: the kept set starts as the rewarded tokens
    opt = torch.optim.SGD([theta], lr=lr)
    for _ in range(steps):
        pi = torch.softmax(theta, 0)
        h = full_entropy(theta) if bonus == "full" else clamped_entropy(theta, drop_all_but_kept(vocab))
        loss = -((pi * r).sum() + LAM * h)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(theta.detach(), 0)


def optimum_full(vocab: int) -> torch.Tensor:
    return torch.softmax(bandit_rewards(vocab) / LAM, 0)


def optimum_clamped(vocab: int) -> torch.Tensor:
    pi = torch.zeros(vocab)
    pi[:KEPT] = torch.softmax(bandit_rewards(vocab)[:KEPT] / LAM, 0)
    return pi


def shortfall(pi: torch.Tensor, vocab: int) -> float:
    """The entropy bias: the best reward minus the expected reward under pi."""
    r = bandit_rewards(vocab)
    return float(r.max() - (pi * r).sum())


def test_gradient_ascent_reaches_softmax_r_over_lambda():
    vocab = 30
    torch.testing.assert_close(ascend(vocab, "full"), optimum_full(vocab), rtol=0, atol=1e-9)
    pi = ascend(vocab, "clamped", lr=10.0)
    # The tail goes to zero: nothing holds it up, and its mass decays like 1 / (lr * steps).
    tail = float(pi[KEPT:].sum())
    assert tail < 3e-3
    # On the kept tokens pi is softmax(r / LAM), up to the residual tail mass (pi~ = softmax((1 - tail) r / LAM)).
    torch.testing.assert_close(pi[:KEPT] / (1 - tail), optimum_clamped(vocab)[:KEPT], rtol=0, atol=5 * tail)
    # The clamped optimum keeps more expected reward than the full one.
    assert shortfall(pi, vocab) < shortfall(optimum_full(vocab), vocab)


def test_entropy_bias_grows_with_vocabulary_for_full_entropy_only():
    sizes = [10, 100, 1_000, 10_000, 100_000]
    full = [shortfall(optimum_full(v), v) for v in sizes]
    clamped = [shortfall(optimum_clamped(v), v) for v in sizes]
    assert all(f > c for f, c in zip(full, clamped))
    assert all(b > a for a, b in zip(full, full[1:]))  # strictly growing with |A|
    assert max(clamped) - min(clamped) < 1e-12  # the kept set is fixed: so is its bias
    # The closed forms: with Z = sum_a exp(r_a / LAM), the full shortfall is 1 - sum r e^{r/LAM} / Z.
    for v, f in zip(sizes, full):
        r = bandit_rewards(v)
        w = torch.exp(r / LAM)
        assert f == pytest.approx(1.0 - float((r * w).sum() / w.sum()), abs=1e-12)
    # The paper's bias term LAM * H * log(|A| / |A*|^(1/H)) grows with |A| the same way.
    bias_term = []
    for v in sizes:
        pi = optimum_full(v)
        h = float(-(pi * pi.log()).sum())
        bias_term.append(LAM * h * math.log(v / 1 ** (1 / h)))
    assert all(b > a for a, b in zip(bias_term, bias_term[1:]))


@pytest.mark.parametrize("vocab", [60, 600])
def test_optimum_is_stationary_for_the_library_bonus(vocab):
    """At softmax(r / LAM) the gradient of E[r] + LAM * H vanishes (through full_entropy), and at the
    clamped optimum (the tail's -inf logits stood in for by very low ones) so does E[r] + LAM * H~."""
    r = bandit_rewards(vocab)
    theta = (r / LAM).requires_grad_(True)
    ((torch.softmax(theta, 0) * r).sum() + LAM * full_entropy(theta)).backward()
    assert float(theta.grad.abs().max()) < 1e-12
    theta = (r / LAM).clone()
    theta[KEPT:] = -60.0  # tail probability ~e^-70: zero for the bonus, negligible for E[r]
    theta.requires_grad_(True)
    ((torch.softmax(theta, 0) * r).sum() + LAM * clamped_entropy(theta, drop_all_but_kept(vocab))).backward()
    assert float(theta.grad[:KEPT].abs().max()) < 1e-12
