"""Proposition 1 (the policy gradient is bounded by a multiple of the entropy) on small softmax
policies, and the entropy-collapse alarm built on it."""
import math

import pytest
import torch

from aent_cli.algos.collapse import EntropyCollapseAlarm, policy_gradient_bound


def _logit_gradient(logits: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """d/dz E_{a~softmax(z)}[A(a)] by autograd: the exact policy gradient for one state."""
    z = logits.clone().requires_grad_(True)
    (torch.softmax(z, -1) * advantages).sum().backward()
    return z.grad


@pytest.mark.parametrize("vocab", [2, 5, 50])
def test_policy_gradient_norm_is_bounded_by_twice_amax_times_entropy(vocab):
    gen = torch.Generator().manual_seed(vocab)
    worst = 0.0
    for scale in (0.1, 1.0, 3.0, 10.0, 30.0):  # from near uniform to near deterministic
        for _ in range(40):
            logits = scale * torch.randn(vocab, generator=gen, dtype=torch.float64)
            adv = torch.empty(vocab, dtype=torch.float64).uniform_(-1.0, 1.0, generator=gen)
            a_max = float(adv.abs().max())
            grad = _logit_gradient(logits, adv)
            # the closed form sum_a pi_a A(a) (e_a - pi) that the bound is proved on
            pi = torch.softmax(logits, -1)
            assert torch.allclose(grad, pi * adv - pi * (pi * adv).sum(), atol=1e-12)
            bound = float(policy_gradient_bound(pi, a_max))
            entropy = float(-(pi * pi.log()).sum())
            assert bound == pytest.approx(2 * a_max * entropy, rel=1e-9)
            assert float(grad.norm()) <= bound + 1e-12
            if bound > 1e-9:
                worst = max(worst, float(grad.norm()) / bound)
    assert worst > 0.05  # the bound is not vacuous: some gradients come within a small factor of it


def test_gradient_vanishes_with_the_entropy_as_a_policy_sharpens():
    """A collapsing policy (logits scaled up) loses its gradient at least as fast as its entropy."""
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0], dtype=torch.float64)
    adv = torch.tensor([-1.0, 1.0, 0.5, 0.2], dtype=torch.float64)  # the likely action is the bad one
    norms, entropies = [], []
    for scale in (1.0, 2.0, 4.0, 8.0, 16.0):
        pi = torch.softmax(scale * logits, -1)
        norms.append(float(_logit_gradient(scale * logits, adv).norm()))
        entropies.append(float(-(pi * pi.log()).sum()))
    assert entropies == sorted(entropies, reverse=True) and entropies[-1] < 1e-5
    assert norms[-1] < 1e-5 < norms[0]
    assert all(n <= 2 * 1.0 * h + 1e-12 for n, h in zip(norms, entropies))


def test_alarm_ratio_and_trip_step():
    alarm = EntropyCollapseAlarm(fraction=0.4, window=3)
    entropies = [1.0, 1.0, 1.0, 0.8, 0.5, 0.3, 0.2, 0.1, 0.5]
    ratios = [alarm.update(h, step) for step, h in enumerate(entropies, start=1)]
    assert all(math.isnan(r) for r in ratios[:2])
    assert ratios[2] == pytest.approx(1.0)
    assert ratios[5] == pytest.approx((0.8 + 0.5 + 0.3) / 3)  # 0.533: not yet
    assert ratios[6] == pytest.approx((0.5 + 0.3 + 0.2) / 3)  # 0.333 < 0.4: trips at step 7
    assert alarm.tripped_at == 7 and alarm.just_tripped(7) and not alarm.just_tripped(8)
    assert alarm.start == pytest.approx(1.0)


def test_alarm_off_at_zero_and_resumes_from_its_state():
    off = EntropyCollapseAlarm(fraction=0.0, window=2)
    for step, h in enumerate([1.0, 1.0, 0.0, 0.0], start=1):
        off.update(h, step)
    assert off.tripped_at is None
    full, cut = EntropyCollapseAlarm(0.5, window=2), EntropyCollapseAlarm(0.5, window=2)
    values = [0.9, 0.7, 0.6, 0.4, 0.2, 0.1]
    want = [full.update(h, s) for s, h in enumerate(values, start=1)]
    for s, h in enumerate(values[:3], start=1):
        cut.update(h, s)
    resumed = EntropyCollapseAlarm(0.5, window=2)
    resumed.load_state_dict(cut.state_dict())
    got = [resumed.update(h, s) for s, h in enumerate(values[3:], start=4)]
    assert got == pytest.approx(want[3:]) and resumed.tripped_at == full.tripped_at == 5
    with pytest.raises(ValueError, match="fraction"):
        EntropyCollapseAlarm(1.0)


def test_training_run_logs_the_ratio_and_warns_once_with_a_tag(small_run):
    """actor/entropy_collapse recomputed from the logged actor/entropy; the warning line and the MLflow
    tag name the first step where it fell below the fraction (none when it never did)."""
    from typer.testing import CliRunner

    from aent_cli.cli.app import app
    from aent_cli.tracking import store

    fraction = 0.97
    result = CliRunner().invoke(app, ["train"] + small_run + ["trainer.steps=8",
                                                             f"trainer.entropy_collapse_fraction={fraction}"])
    assert result.exit_code == 0, result.output
    client = store.client(small_run[0].split("=", 1)[1])
    run = client.search_runs([client.get_experiment_by_name("aent").experiment_id])[0]
    entropy = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "actor/entropy"), key=lambda m: m.step)]
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "actor/entropy_collapse")}
    assert sorted(logged) == [5, 6, 7, 8]
    start = sum(entropy[:5]) / 5
    expected = {s: sum(entropy[s - 5:s]) / 5 / start for s in range(5, 9)}
    assert logged == pytest.approx(expected, rel=1e-6)
    tripped = next((s for s in range(5, 9) if expected[s] < fraction), None)
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: entropy collapse")]
    if tripped is None:
        assert not warnings and "aent.entropy_collapse_step" not in run.data.tags
    else:
        assert len(warnings) == 1 and f"at step {tripped}:" in warnings[0]
        assert run.data.tags["aent.entropy_collapse_step"] == str(tripped)
