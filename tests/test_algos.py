"""Advantages, policy losses, aggregation, KL, the composed objective and the entropy coefficient,
each on a case small enough to compute by hand (the expected numbers are written out here)."""
import json
import math
from dataclasses import replace

import pytest
import torch

from aent_cli.algos.advantages import consecutive_groups, drgrpo_advantages, grpo_advantages
from aent_cli.algos.aggregation import seq_mean_token_mean, seq_mean_token_sum_norm, token_mean
from aent_cli.algos.coef import AdaptiveEntropyCoef, build_coef
from aent_cli.algos.kl import kl_k1, kl_k3
from aent_cli.algos.objective import compute_loss
from aent_cli.algos.policy import PolicyLossInput, ppo_clip_loss, reinforce_loss
from aent_cli.config.schema import AlgoConfig, CoefConfig


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


# ---- advantages ------------------------------------------------------------------------------------


def test_grpo_advantages_by_hand():
    rewards = t(1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0)  # three groups of 4
    adv = grpo_advantages(rewards, consecutive_groups(12, 4), eps=1e-6)
    # group 1: mean 0.75, unbiased std sqrt((3 * 0.25^2 + 0.75^2) / 3) = 0.5
    # group 3: mean 0.25, the same std 0.5
    expected = t(0.25, -0.75, 0.25, 0.25, 0, 0, 0, 0, 0.75, -0.25, -0.25, -0.25) / (0.5 + 1e-6)
    expected[4:8] = 0.0
    torch.testing.assert_close(adv, expected)
    assert torch.equal(adv[4:8], torch.zeros(4))  # all-equal group: exactly 0, no NaN
    assert torch.isfinite(grpo_advantages(torch.ones(6), consecutive_groups(6, 3))).all()


def test_drgrpo_advantages_by_hand():
    adv = drgrpo_advantages(t(1, 0, 1, 1, 2, 2), consecutive_groups(6, 3))
    torch.testing.assert_close(adv, t(1 / 3, -2 / 3, 1 / 3, -2 / 3, 1 / 3, 1 / 3))  # group means 2/3, 5/3
    assert torch.equal(drgrpo_advantages(t(0.5, 0.5), consecutive_groups(2, 2)), torch.zeros(2))


def test_advantages_reject_a_group_index_of_another_shape():
    with pytest.raises(ValueError, match="same 1-d shape"):
        grpo_advantages(torch.zeros(6), consecutive_groups(4, 2))


@pytest.mark.parametrize("estimator", [grpo_advantages, drgrpo_advantages])
def test_advantages_follow_the_group_index_not_row_order(estimator):
    """Groups of 3, 1 and 4 rows, interleaved, with arbitrary labels: each row gets what its group alone,
    as adjacent rows, would give; the one-row group gets 0."""
    rewards = t(1, 0, 0.5, 1, 0, 1, 1, 0)
    group_index = torch.tensor([7, 2, 7, 9, 2, 2, 7, 2])
    got = estimator(rewards, group_index)
    for label in (2, 7, 9):
        rows = (group_index == label).nonzero().flatten()
        alone = estimator(rewards[rows], torch.zeros(len(rows), dtype=torch.long))
        assert torch.equal(got[rows], alone), label
    assert got[3] == 0.0
    perm = torch.tensor([5, 0, 3, 7, 1, 6, 2, 4])
    assert torch.equal(estimator(rewards[perm], group_index[perm]), got[perm])


# ---- policy losses ---------------------------------------------------------------------------------

RATIOS = t(1.5, 0.5, 0.5, 1.5, 5.0, 1.1, 1.25)
ADV = t(1.0, 1.0, -1.0, -1.0, -1.0, 2.0, 1.0)


def ppo(mask=None, **kw):
    old = torch.zeros(1, len(RATIOS))
    logp = RATIOS.log().unsqueeze(0)
    mask = torch.ones_like(old) if mask is None else mask
    return ppo_clip_loss(PolicyLossInput(logp, old, ADV.unsqueeze(0), mask, **kw))


def test_ppo_clip_decoupled_epsilons_by_hand():
    loss, stats = ppo(clip_eps_low=0.2, clip_eps_high=0.28)
    # -min(rho A, clip(rho, 0.8, 1.28) A) per token:
    expected = t(-1.28, -0.5, 0.8, 1.5, 5.0, -2.2, -1.25)
    torch.testing.assert_close(loss.squeeze(0), expected)
    assert stats["pg_clipfrac"].item() == pytest.approx(2 / 7)  # tokens 0 and 2 are clipped
    # ppo_kl is the mean of log(old / new)
    assert stats["ppo_kl"].item() == pytest.approx(float(-RATIOS.log().mean()), rel=1e-6)
    # Symmetric 0.2 clips token 6 (rho 1.25 > 1.2) as well: decoupling eps_high matters.
    loss_sym, stats_sym = ppo(clip_eps_low=0.2, clip_eps_high=0.2)
    assert loss_sym[0, 6].item() == pytest.approx(-1.2)
    assert stats_sym["pg_clipfrac"].item() == pytest.approx(3 / 7)


def test_ppo_dual_clip_caps_negative_advantage_tokens():
    loss, stats = ppo(clip_eps_low=0.2, clip_eps_high=0.28, dual_clip_c=3.0)
    expected = t(-1.28, -0.5, 0.8, 1.5, 3.0, -2.2, -1.25)  # token 4: min(5.0, -A * c) = 3.0
    torch.testing.assert_close(loss.squeeze(0), expected)
    assert stats["pg_clipfrac_dual"].item() == pytest.approx(1 / 7)


def test_ppo_clip_stats_respect_the_mask():
    mask = torch.ones(1, 7)
    mask[0, 0] = 0.0  # the one clipped positive-advantage token is padding
    _, stats = ppo(mask=mask, clip_eps_low=0.2, clip_eps_high=0.28)
    assert stats["pg_clipfrac"].item() == pytest.approx(1 / 6)


def test_ppo_gradient_is_zero_where_clipped():
    logp = RATIOS.log().unsqueeze(0).requires_grad_(True)
    loss, _ = ppo_clip_loss(PolicyLossInput(logp, torch.zeros(1, 7), ADV.unsqueeze(0), torch.ones(1, 7),
                                            clip_eps_low=0.2, clip_eps_high=0.28))
    loss.sum().backward()
    # unclipped tokens: d(-A rho)/d logp = -A rho; clipped ones (0 and 2): 0
    torch.testing.assert_close(logp.grad.squeeze(0), t(0, -0.5, 0, 1.5, 5.0, -2.2, -1.25))


def test_reinforce_by_hand():
    logp = t(-0.5, -2.0, -1.0).unsqueeze(0).requires_grad_(True)
    adv = t(1.0, -0.5, 0.0).unsqueeze(0)
    loss, stats = reinforce_loss(PolicyLossInput(logp, logp.detach(), adv, torch.ones(1, 3)))
    torch.testing.assert_close(loss.squeeze(0), t(0.5, -1.0, 0.0))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad.squeeze(0), t(-1.0, 0.5, 0.0))
    assert stats["ppo_kl"].item() == 0.0 and stats["pg_clipfrac"].item() == 0.0


# ---- aggregation -----------------------------------------------------------------------------------

VALUES = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float32)


def test_aggregations_by_hand():
    # token_mean: all 7 valid tokens: (10 + 30 + 5) / 7
    assert token_mean(VALUES, MASK).item() == pytest.approx(45 / 7)
    # seq_mean_token_mean: mean of the per-sequence means 2.5, 15, 5
    assert seq_mean_token_mean(VALUES, MASK).item() == pytest.approx((2.5 + 15 + 5) / 3)
    # seq_mean_token_sum_norm: per-sequence sums divided by one length (4), then mean over sequences
    assert seq_mean_token_sum_norm(VALUES, MASK).item() == pytest.approx((10 / 4 + 30 / 4 + 5 / 4) / 3)
    assert seq_mean_token_sum_norm(VALUES, MASK, norm_length=10).item() == pytest.approx(45 / 10 / 3)
    # masked-out values never count
    noisy = VALUES + 100.0 * (1 - MASK)
    assert token_mean(noisy, MASK).item() == pytest.approx(45 / 7)


@pytest.mark.parametrize("aggregate, denom", [(token_mean, 7.0), (seq_mean_token_mean, 3.0),
                                              (seq_mean_token_sum_norm, 3.0)])
def test_micro_batches_sum_to_the_whole_batch(aggregate, denom):
    whole = aggregate(VALUES, MASK, norm_length=4)
    parts = [aggregate(VALUES[rows], MASK[rows], denom=denom, norm_length=4) for rows in (slice(0, 1), slice(1, 3))]
    assert (parts[0] + parts[1]).item() == pytest.approx(whole.item())
    # without denom each micro-batch normalises by itself, and the sum is not the whole-batch loss
    alone = [aggregate(VALUES[rows], MASK[rows], norm_length=4) for rows in (slice(0, 1), slice(1, 3))]
    assert (alone[0] + alone[1]).item() != pytest.approx(whole.item())


# ---- KL --------------------------------------------------------------------------------------------


def test_kl_estimators_by_hand():
    logp, ref = t(-1.0, -2.0, -0.5), t(-1.5, -2.0, 0.0)
    torch.testing.assert_close(kl_k1(logp, ref), t(0.5, 0.0, -0.5))
    d = ref - logp  # -0.5, 0, 0.5
    expected = t(*(math.exp(v) - v - 1 for v in d.tolist()))
    torch.testing.assert_close(kl_k3(logp, ref), expected)
    assert kl_k3(logp, logp).abs().max().item() == 0.0
    assert (kl_k3(logp, ref) >= 0).all()
    assert torch.isfinite(kl_k3(t(-100.0), t(0.0))).all()  # the log-ratio is clamped before exp


# ---- the composed objective ------------------------------------------------------------------------


def algo(**kw) -> AlgoConfig:
    return replace(AlgoConfig(), **kw)


def test_compute_loss_composes_policy_bonus_and_kl():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.5, -9.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-0.5, -1.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    entropy = torch.tensor([[0.2, 0.4, 0.6], [1.0, 2.0, 50.0]])
    adv = torch.tensor([1.0, -2.0])  # per sequence, broadcast over its tokens
    cfg = algo(policy_loss="reinforce", loss_agg="token_mean", bonus="clamped", kl_coef=0.1, kl_estimator="k1")
    loss, stats = compute_loss(cfg, logp, logp.detach(), adv, mask, coef=0.01, bonus_entropy=entropy, ref_logp=ref)
    pg = (1 + 2 + 3 + 2 * -0.5 + 2 * -1.5) / 5  # -A * logp, token mean over the 5 valid tokens
    bonus = (0.2 + 0.4 + 0.6 + 1.0 + 2.0) / 5
    kl = (0.5 + 0.0 - 1.0 + 0.0 - 0.5) / 5
    assert stats["pg_loss"].item() == pytest.approx(pg)
    assert stats["entropy_bonus"].item() == pytest.approx(bonus)
    assert stats["kl_ref"].item() == pytest.approx(kl)
    assert loss.item() == pytest.approx(pg - 0.01 * bonus + 0.1 * kl)  # -(L_PO + lambda * H) + beta * KL


def test_compute_loss_without_bonus_or_kl_and_missing_inputs():
    logp, mask = torch.tensor([[-1.0, -2.0]]), torch.ones(1, 2)
    plain = algo(policy_loss="reinforce", bonus="none", kl_coef=0.0)
    loss, stats = compute_loss(plain, logp, logp, torch.tensor([1.0]), mask, coef=0.5)
    assert loss.item() == pytest.approx(1.5) and "entropy_bonus" not in stats and "kl_ref" not in stats
    with pytest.raises(ValueError, match="entropy"):
        compute_loss(algo(policy_loss="reinforce", bonus="full"), logp, logp, torch.tensor([1.0]), mask, coef=0.5)
    with pytest.raises(ValueError, match="reference"):
        compute_loss(algo(policy_loss="reinforce", bonus="none", kl_coef=0.1), logp, logp, torch.tensor([1.0]),
                     mask, coef=0.5)


def test_compute_loss_gradient_of_the_bonus_is_minus_coef():
    logp, mask = torch.tensor([[-1.0, -2.0]]), torch.ones(1, 2)
    entropy = torch.tensor([[0.3, 0.7]], requires_grad=True)
    loss, _ = compute_loss(algo(policy_loss="reinforce", bonus="clamped"), logp, logp, torch.tensor([0.0]), mask,
                           coef=0.2, bonus_entropy=entropy)
    loss.backward()
    torch.testing.assert_close(entropy.grad, torch.full((1, 2), -0.2 / 2))


# ---- the entropy coefficient -----------------------------------------------------------------------


def coef(**kw) -> AdaptiveEntropyCoef:
    base = dict(init=0.002, h_low=0.13, h_high=0.24, lr=0.002, min=0.0006, max=0.009, start_step=3)
    return AdaptiveEntropyCoef(**{**base, **kw})


def test_adaptive_coefficient_band_rules():
    c = coef()
    assert c.update(0.20, step=3) == pytest.approx(0.002)  # inside the band: unchanged
    assert c.update(0.03, step=4) == pytest.approx(0.002 + 0.002 * (0.13 - 0.03))  # below: up by lr (h_low - H)
    before = c.value
    assert c.update(0.54, step=5) == pytest.approx(before - 0.002 * (0.54 - 0.24))  # above: down by lr (H - h_high)
    assert c.update(0.13, step=6) == pytest.approx(before - 0.002 * 0.30)  # the band's edges count as inside
    assert c.update(0.24, step=7) == pytest.approx(before - 0.002 * 0.30)


def test_adaptive_coefficient_is_clipped_and_frozen_before_start():
    c = coef(lr=1.0)
    assert c.update(0.0, step=2) == 0.002  # before start_step: frozen at init
    assert c.update(0.0, step=3) == 0.009  # 0.002 + 0.13 clipped to max
    assert c.update(10.0, step=4) == 0.0006  # far above the band: clipped to min
    constant = coef(mode="constant", lr=1.0)
    assert all(constant.update(h, step=10) == 0.002 for h in (0.0, 0.2, 9.0))


def test_adaptive_coefficient_state_round_trips_through_json():
    c = coef()
    for step, h in enumerate([0.05, 0.3, 0.01], start=3):
        c.update(h, step)
    saved = json.loads(json.dumps(c.state_dict()))
    resumed = coef()
    resumed.load_state_dict(saved)
    assert resumed.value == c.value
    assert resumed.update(0.02, 7) == c.update(0.02, 7)


def test_build_coef_converts_start_epoch_to_the_first_step_of_that_epoch():
    cfg = algo(coef=CoefConfig(mode="adaptive", init=0.002, lr=0.002, min=0.0006, max=0.009, start_epoch=3))
    c = build_coef(cfg, steps_per_epoch=10)
    assert c.start_step == 21  # epochs 1-2 are steps 1-20
    assert c.update(0.0, step=20) == 0.002
    assert c.update(0.0, step=21) == pytest.approx(0.002 + 0.002 * 0.13)
    assert (c.h_low, c.h_high) == (cfg.h_low, cfg.h_high)
    half = build_coef(algo(coef=CoefConfig(start_epoch=2.5)), steps_per_epoch=4)
    assert half.start_step == 7  # round(1.5 * 4) + 1
    by_step = build_coef(algo(coef=CoefConfig(start_step=5, start_epoch=None)), steps_per_epoch=100)
    assert by_step.start_step == 5


def test_advantages_refuse_non_finite_rewards_and_a_float_index():
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            grpo_advantages(t(1, bad), consecutive_groups(2, 2))
    with pytest.raises(ValueError, match="integers"):
        drgrpo_advantages(t(1, 0), torch.zeros(2))
    with pytest.raises(ValueError, match="group_size"):
        consecutive_groups(6, 0)
