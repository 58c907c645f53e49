"""Clip-Cov, KL-Cov, the high-entropy mask and the target-entropy coefficient on hand-computed batches."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from aent_cli.algos.coef import AdaptiveEntropyCoef, TargetEntropyCoef, build_coef
from aent_cli.algos.entropy_controls import (
    clip_cov_loss,
    high_entropy_mask_loss,
    high_entropy_tokens,
    kl_cov_loss,
    masked_quantile,
    token_covariance,
)
from aent_cli.algos.objective import compute_loss
from aent_cli.algos.policy import PolicyLossInput, ppo_clip_loss
from aent_cli.algos.registry import POLICY_LOSSES
from aent_cli.config import ConfigError, compose_config, validate

NEW_ALGOS = ["clip_cov", "kl_cov", "target_entropy", "high_entropy_mask"]

# Two responses, the second one token shorter. Valid log-probs 0, -1, -2, -3, -4 (mean -2); advantages
# +2 for response 0 and -2 for response 1 (token mean 0.4). So the covariances are
#   (0+2)(1.6) = 3.2, (1)(1.6) = 1.6, (0)(1.6) = 0,  (-1)(-2.4) = 2.4, (-2)(-2.4) = 4.8, padding -> 0.
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
LOGP = torch.tensor([[0.0, -1.0, -2.0], [-3.0, -4.0, 7.0]], dtype=torch.float64)
ADV = torch.tensor([[2.0, 2.0, 2.0], [-2.0, -2.0, -2.0]], dtype=torch.float64)
COV = torch.tensor([[3.2, 1.6, 0.0], [2.4, 4.8, 0.0]], dtype=torch.float64)


def _leaf(values=LOGP):
    return values.clone().requires_grad_(True)


def _grad_of(loss_fn, old_logp=None, **kwargs):
    """Per-token loss and d(sum of valid per-token losses)/d logp."""
    logp = _leaf()
    old = LOGP.clone() if old_logp is None else old_logp
    loss, stats = loss_fn(PolicyLossInput(logp, old, ADV, MASK, **kwargs))
    (loss * MASK).sum().backward()
    return loss, stats, logp.grad


def test_every_method_is_registered_under_its_name():
    for name in ("clip_cov", "kl_cov", "high_entropy_mask"):
        assert name in POLICY_LOSSES


def test_token_covariance_matches_hand_computation():
    assert torch.allclose(token_covariance(LOGP, ADV, MASK), COV)


def test_clip_cov_detaches_exactly_the_tokens_inside_the_band():
    # Band (2.4, 4.8) is open: only the 3.2 token qualifies; a ratio of 1 asks for more than exist.
    algo = SimpleNamespace(cov_ratio=1.0, cov_clip_lower=2.4, cov_clip_upper=4.8)
    loss, stats, grad = _grad_of(clip_cov_loss, algo=algo)
    expected_grad = torch.tensor([[0.0, -2.0, -2.0], [2.0, 2.0, 0.0]], dtype=torch.float64)  # -A where kept
    assert torch.equal(grad, expected_grad)
    assert stats["cov_clip_frac"].item() == pytest.approx(1 / 5)
    # The detached token keeps its PPO loss value (-A * 1), so pg_loss still compares with GRPO's.
    ppo, _ = ppo_clip_loss(PolicyLossInput(LOGP, LOGP, ADV, MASK))
    assert torch.equal(loss.detach(), ppo)


def test_clip_cov_picks_a_random_count_from_the_candidates_only():
    # (1, 5) holds 3.2, 1.6, 2.4, 4.8; int(0.5 * 5) = 2 of them are dropped per call.
    algo = SimpleNamespace(cov_ratio=0.5, cov_clip_lower=1.0, cov_clip_upper=5.0)
    candidates = (COV > 1.0) & (COV < 5.0) & MASK.bool()
    seen = torch.zeros_like(candidates)
    for seed in range(60):
        torch.manual_seed(seed)
        _, stats, grad = _grad_of(clip_cov_loss, algo=algo)
        dropped = (grad == 0) & MASK.bool()
        assert int(dropped.sum()) == 2 and bool((dropped & ~candidates).sum() == 0)
        assert stats["cov_clip_frac"].item() == pytest.approx(2 / 5)
        seen |= dropped
    assert torch.equal(seen, candidates)  # every candidate gets drawn at some point
    torch.manual_seed(7)
    first = _grad_of(clip_cov_loss, algo=algo)[2]
    torch.manual_seed(7)
    assert torch.equal(first, _grad_of(clip_cov_loss, algo=algo)[2])  # seeded by torch's global RNG


def test_clip_cov_never_picks_tokens_ppo_already_clipped_or_padding():
    # Token (0, 0) (cov 3.2, A = +2) gets ratio e^0.5 > 1.2: PPO's clip already zeroes its gradient.
    old = LOGP.clone()
    old[0, 0] -= 0.5
    algo = SimpleNamespace(cov_ratio=1.0, cov_clip_lower=2.4, cov_clip_upper=4.8)
    _, stats, grad = _grad_of(clip_cov_loss, old_logp=old, algo=algo)
    assert stats["cov_clip_frac"].item() == 0.0
    assert grad[0, 0].item() == 0.0 and grad[0, 1].item() == -2.0
    # Padding's covariance would be (7 + 2)(-2.4) < 0 anyway; widen the band so only padding could qualify.
    algo = SimpleNamespace(cov_ratio=1.0, cov_clip_lower=-100.0, cov_clip_upper=-1.0)
    _, stats, _ = _grad_of(clip_cov_loss, algo=algo)
    assert stats["cov_clip_frac"].item() == 0.0


def test_kl_cov_penalises_the_top_covariance_tokens():
    # int(0.4 * 5) = 2 tokens: covariances 4.8 and 3.2. log ratio = -0.1 everywhere.
    old = LOGP + 0.1
    algo = SimpleNamespace(kl_cov_ratio=0.4, kl_cov_coef=0.5)
    loss, stats, grad = _grad_of(kl_cov_loss, old_logp=old, algo=algo)
    ratio = math.exp(-0.1)
    chosen = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    expected_loss = -ADV * ratio + 0.5 * 0.1 * chosen
    assert torch.allclose(loss[MASK.bool()], expected_loss[MASK.bool()])
    # d/dlogp [-A e^(logp-old) + c |logp - old|] = -A ratio + c * sign(logp - old) = -A ratio - c.
    expected_grad = (-ADV * ratio - 0.5 * chosen) * MASK
    assert torch.allclose(grad, expected_grad)
    assert stats["kl_cov_frac"].item() == pytest.approx(2 / 5)
    assert stats["ppo_kl"].item() == pytest.approx(0.1)


def test_kl_cov_does_not_clip_the_ratio():
    old = LOGP.clone()
    old[0, 1] -= 1.0  # ratio e, far beyond 1 + 0.2: PPO would give zero gradient here
    _, _, grad = _grad_of(kl_cov_loss, old_logp=old, algo=SimpleNamespace(kl_cov_ratio=0.2, kl_cov_coef=1.0))
    assert grad[0, 1].item() == pytest.approx(-2.0 * math.e)  # (0, 1) has cov 1.6: not penalised


def test_kl_cov_selection_matches_a_plain_python_reference():
    torch.manual_seed(0)
    logp = -torch.rand(6, 40, dtype=torch.float64) * 3
    adv = torch.randn(6, 1, dtype=torch.float64).expand(6, 40)
    lengths = torch.tensor([40, 3, 17, 25, 1, 33])
    mask = (torch.arange(40)[None] < lengths[:, None]).double()
    algo = SimpleNamespace(kl_cov_ratio=0.05, kl_cov_coef=1.0)
    loss, _ = kl_cov_loss(PolicyLossInput(logp, logp - 0.2, adv, mask, algo=algo))
    unpenalised = -adv * torch.exp(logp - (logp - 0.2))
    chosen = ~torch.isclose(loss.detach(), unpenalised) & mask.bool()  # the penalty adds 0.2 where chosen
    # Reference: list of (cov, position) over valid tokens, population means, top int(0.05 n) by cov.
    valid = [(b, t) for b in range(6) for t in range(40) if mask[b, t]]
    mean_l = sum(logp[b, t].item() for b, t in valid) / len(valid)
    mean_a = sum(adv[b, t].item() for b, t in valid) / len(valid)
    covs = sorted(((logp[b, t].item() - mean_l) * (adv[b, t].item() - mean_a), (b, t)) for b, t in valid)
    expected = {pos for _, pos in covs[-int(0.05 * len(valid)):]}
    assert {(b, t) for b, t in zip(*chosen.nonzero(as_tuple=True)) for b, t in [(int(b), int(t))]} == expected


ENTROPY = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.7, 99.0]], dtype=torch.float64)  # 99 sits on padding


def test_high_entropy_tokens_top_rho_by_interpolated_quantile():
    # Valid entropies sorted 0.1 0.3 0.5 0.7 0.9; the 0.6-quantile is 0.5 + 0.4 * 0.2 = 0.58.
    assert masked_quantile(ENTROPY, MASK, 0.6).item() == pytest.approx(0.58)
    keep = high_entropy_tokens(ENTROPY, MASK, rho=0.4)
    assert keep.tolist() == [[False, True, False], [False, True, False]]
    # The threshold is torch.quantile's (linear interpolation) over the valid tokens.
    torch.manual_seed(1)
    values, mask = torch.rand(5, 30), (torch.rand(5, 30) > 0.3).float()
    for q in (0.0, 0.37, 0.8, 1.0):
        assert masked_quantile(values, mask, q).item() == pytest.approx(
            torch.quantile(values[mask.bool()], q).item())
    with pytest.raises(ValueError, match="rho"):
        high_entropy_tokens(ENTROPY, MASK, rho=0.0)


def test_high_entropy_mask_gradient_only_on_kept_tokens():
    loss, stats, grad = _grad_of(high_entropy_mask_loss, algo=SimpleNamespace(entropy_mask_rho=0.4),
                                 token_entropy=ENTROPY)
    assert torch.equal(grad, torch.tensor([[0.0, -2.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64))
    assert stats["entropy_mask_frac"].item() == pytest.approx(2 / 5)
    # rho = 1 keeps every valid token: exactly PPO-clip, gradient included.
    _, stats, grad_all = _grad_of(high_entropy_mask_loss, algo=SimpleNamespace(entropy_mask_rho=1.0),
                                  token_entropy=ENTROPY)
    _, _, grad_ppo = _grad_of(ppo_clip_loss)
    assert torch.equal(grad_all, grad_ppo) and stats["entropy_mask_frac"].item() == 1.0
    with pytest.raises(ValueError, match="token_entropy"):
        high_entropy_mask_loss(PolicyLossInput(LOGP, LOGP, ADV, MASK, algo=SimpleNamespace(entropy_mask_rho=0.2)))


def test_target_coefficient_steps_toward_target_and_clips():
    coef = TargetEntropyCoef(init=0.01, target=0.2, delta=0.002, min=0.0, max=0.015, start_step=2)
    assert coef.tracked_entropy == "full" and AdaptiveEntropyCoef.tracked_entropy == "clamped"
    assert coef.update(0.0, step=1) == 0.01  # before start_step
    values = [coef.update(h, step=s) for s, h in enumerate([0.1, 0.2, 0.1, 0.5], start=2)]
    assert values == pytest.approx([0.012, 0.014, 0.015, 0.013])  # equality raises (TRL); max clips 0.016
    for s in range(6, 20):
        coef.update(0.9, step=s)
    assert coef.value == 0.0  # min clips
    with pytest.raises(ValueError, match="outside"):
        TargetEntropyCoef(init=0.5, target=0.2, delta=0.01, min=0.0, max=0.1)


def test_target_coefficient_state_round_trips_through_json():
    coef = TargetEntropyCoef(init=0.01, target=0.2, delta=0.003, max=0.05)
    for step, h in enumerate([0.1, 0.1, 0.3]):
        coef.update(h, step)
    state = json.loads(json.dumps(coef.state_dict()))
    resumed = TargetEntropyCoef(init=0.01, target=0.2, delta=0.003, max=0.05)
    resumed.load_state_dict(state)
    assert resumed.value == pytest.approx(0.013)
    assert [resumed.update(h, 3 + i) for i, h in enumerate([0.1, 0.4])] == \
        [coef.update(h, 3 + i) for i, h in enumerate([0.1, 0.4])]
    with pytest.raises(ValueError, match="adaptive"):
        resumed.load_state_dict(AdaptiveEntropyCoef(init=0.01, min=0.0, max=0.1).state_dict())


@pytest.mark.parametrize("name", NEW_ALGOS)
def test_new_algo_groups_compose_and_validate(name):
    cfg = validate(compose_config([f"algo={name}"]))
    assert cfg.algo.name == name
    if name != "target_entropy":
        assert cfg.algo.policy_loss == name and cfg.algo.bonus == "none" and cfg.algo.coef.mode == "constant"
    else:
        assert cfg.algo.policy_loss == "ppo_clip" and cfg.algo.bonus == "full" and cfg.algo.coef.mode == "target"


def test_build_coef_picks_the_controller_and_the_entropy_it_tracks():
    target = build_coef(validate(compose_config(["algo=target_entropy"])).algo, steps_per_epoch=10)
    assert isinstance(target, TargetEntropyCoef) and target.tracked_entropy == "full"
    assert (target.value, target.target, target.delta) == (0.01, 0.2, 0.002)
    clamped = build_coef(compose_config(["algo=target_entropy", "algo.bonus=clamped",
                                         "algo.coef.start_epoch=3"]).algo, steps_per_epoch=10)
    assert clamped.tracked_entropy == "clamped" and clamped.start_step == 21
    aent = build_coef(compose_config(["algo=aent"]).algo, steps_per_epoch=10)
    assert isinstance(aent, AdaptiveEntropyCoef) and aent.tracked_entropy == "clamped"


@pytest.mark.parametrize("overrides,key", [
    (["algo.cov_ratio=0"], "algo.cov_ratio"),
    (["algo.kl_cov_ratio=1.5"], "algo.kl_cov_ratio"),
    (["algo.entropy_mask_rho=0"], "algo.entropy_mask_rho"),
    (["algo.cov_clip_lower=6"], "algo.cov_clip_lower"),
    (["algo.kl_cov_coef=-1"], "algo.kl_cov_coef"),
    (["algo=target_entropy", "algo.target_entropy=-0.1"], "algo.target_entropy"),
    (["algo=target_entropy", "algo.coef.delta=-0.001"], "algo.coef.delta"),
    (["algo=target_entropy", "algo.coef.init=0.1"], "algo.coef.init"),
    (["algo=grpo", "algo.coef.mode=target", "algo.coef.min=0"], "algo.coef.mode"),
    (["algo.policy_loss=clipcov"], "algo.policy_loss"),
])
def test_range_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose_config(overrides))


@pytest.mark.parametrize("name", NEW_ALGOS)
def test_compute_loss_runs_each_method_from_its_config(name):
    """Each method needs only what compute_loss is given; the loss backpropagates to the logits."""
    algo = validate(compose_config([f"algo={name}"])).algo
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 9, requires_grad=True)
    tokens = torch.randint(0, 9, (4, 6))
    log_probs = torch.log_softmax(logits, -1)
    logp = log_probs.gather(-1, tokens[..., None]).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    mask = (torch.arange(6)[None] < torch.tensor([6, 4, 5, 2])[:, None]).float()
    coef = build_coef(algo, steps_per_epoch=1)
    loss, stats = compute_loss(
        algo, logp, logp.detach() - 0.05, torch.tensor([2.0, -2.0, 1.5, -1.5]), mask, coef.value,
        bonus_entropy=entropy, token_entropy=entropy.detach(),
    )
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0
    frac_key = {"clip_cov": "cov_clip_frac", "kl_cov": "kl_cov_frac", "high_entropy_mask": "entropy_mask_frac"}
    if name in frac_key:
        assert 0 < stats[frac_key[name]].item() <= 1
    else:
        assert stats["entropy_bonus"].item() > 0
