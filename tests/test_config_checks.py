"""validate's choices come from the registries, and every row of its range table can fail, naming its key."""
import copy

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from aent_cli.algos.registry import POLICY_LOSSES
from aent_cli.config import ConfigError, compose_config, validate
from aent_cli.config.choices import choices
from aent_cli.config.validate import RANGES


@pytest.fixture(scope="module")
def base_cfg():
    return validate(compose_config([]))


def test_choices_are_the_registries():
    from aent_cli.algos.objective import BONUS_ENTROPY
    from aent_cli.algos.registry import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS
    from aent_cli.rewards.extract import EXTRACTORS
    from aent_cli.rollout import BACKENDS

    c = choices()
    assert set(c["algo.policy_loss"]) == set(POLICY_LOSSES) >= {"ppo_clip", "reinforce", "clip_cov", "kl_cov",
                                                                 "high_entropy_mask"}
    assert set(c["algo.advantage"]) == set(ADVANTAGES) == {"grpo", "drgrpo"}
    assert set(c["algo.loss_agg"]) == set(AGGREGATIONS)
    assert set(c["algo.kl_estimator"]) == set(KL_ESTIMATORS) == {"k1", "k3"}
    assert set(c["algo.bonus"]) == {"none"} | set(BONUS_ENTROPY) == {"none", "full", "clamped"}
    assert set(c["reward.extractor"]) == {None} | set(EXTRACTORS)
    assert set(c["rollout.backend"]) == set(BACKENDS) == {"hf", "vllm"}


def test_a_newly_registered_loss_is_accepted_without_another_edit(base_cfg):
    cfg = copy.deepcopy(base_cfg)
    cfg.algo.policy_loss = "my_loss"
    with pytest.raises(ConfigError, match=r"algo\.policy_loss='my_loss' is out of range: one of ppo_clip"):
        validate(cfg)
    POLICY_LOSSES["my_loss"] = lambda *args, **kw: None
    choices.cache_clear()
    try:
        assert validate(cfg).algo.policy_loss == "my_loss"
    finally:
        del POLICY_LOSSES["my_loss"]
        choices.cache_clear()


CANDIDATES = [-2, -1, 0, 1, 2, 5, 0.5, 1.5, -0.5]


@pytest.mark.parametrize("key", sorted(RANGES))
def test_every_range_row_refuses_a_value_naming_its_key(key, base_cfg):
    holds, allowed = RANGES[key]
    refused = 0
    for bad in CANDIDATES:
        cfg = copy.deepcopy(base_cfg)
        try:
            OmegaConf.update(cfg, key, bad, merge=False)
        except OmegaConfBaseException:
            continue  # a float for an int key: types refuse it before validate
        if holds(OmegaConf.select(cfg, key)):
            continue
        with pytest.raises(ConfigError) as info:
            validate(cfg)
        assert str(info.value).startswith(f"{key}=") and allowed in str(info.value)
        refused += 1
    assert refused, f"no candidate value falls outside {key}'s range: the row is never exercised"


@pytest.mark.parametrize("override,message", [
    ("trainer.stop_after=0", "trainer.stop_after=0 is out of range: >= 1"),
    ("trainer.stop_after=-3", "trainer.stop_after=-3 is out of range: >= 1"),
    ("eval.checkpoint=last", "eval.checkpoint='last' is out of range: one of best, final, all"),
    ("rollout.backend=sglang", "rollout.backend='sglang' is out of range: one of hf, vllm"),
])
def test_named_refusals(override, message):
    with pytest.raises(ConfigError) as info:
        validate(compose_config([override]))
    assert str(info.value).startswith(message)


def test_stop_after_null_and_positive_pass():
    assert validate(compose_config(["trainer.stop_after=3"])).trainer.stop_after == 3
    assert validate(compose_config([])).trainer.stop_after is None
