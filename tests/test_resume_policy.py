"""The resume override policy (engine/resume.py) without training: which overrides are refused,
which honoured, and that a key named on the command line counts even when it equals the default."""
import pytest
from omegaconf import OmegaConf

from aent_cli.config import compose_config
from aent_cli.engine.resume import resumed_config
from aent_cli.errors import UserError


@pytest.fixture(scope="module")
def defaults():
    return compose_config([])


def saved_run(tmp_path, overrides):
    run_dir = tmp_path / "R"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(compose_config(overrides), resolve=True))
    return run_dir


def resume(run_dir, overrides, defaults):
    cfg = compose_config(overrides + [f"trainer.resume={run_dir}"])
    return resumed_config(cfg, run_dir, overrides + [f"trainer.resume={run_dir}"], defaults)


def test_refused_overrides_are_listed_with_the_runs_values(tmp_path, defaults):
    run_dir = saved_run(tmp_path, ["algo=grpo", "trainer.seed=3"])
    with pytest.raises(UserError) as err:
        resume(run_dir, ["algo=aent", "trainer.seed=4", "rollout.n=4", "model.path=/m"], defaults)
    text = str(err.value)
    for part in ("algo.name=aent (run: grpo)", "algo.bonus=clamped (run: none)", "trainer.seed=4 (run: 3)",
                 "rollout.n=4 (run: 8)", "model.path=/m (run: tiny)", "start a new run"):
        assert part in text, part


def test_untouched_keys_keep_the_runs_values_and_allowed_ones_apply(tmp_path, defaults):
    run_dir = saved_run(tmp_path, ["algo=grpo", "trainer.steps=5", "trainer.seed=3", "tracking.log_every=7"])
    cfg, applied = resume(run_dir, ["trainer.steps=9", "trainer.checkpoint_every=3", "tracking.uri=sqlite:///x.db",
                                    "trainer.seed=3", "eval.k=8"], defaults)
    assert cfg.algo.name == "grpo" and cfg.trainer.seed == 3 and cfg.tracking.log_every == 7
    assert cfg.trainer.steps == 9 and cfg.trainer.checkpoint_every == 3 and cfg.tracking.uri == "sqlite:///x.db"
    assert cfg.eval.k == 8
    assert {"trainer.steps", "trainer.checkpoint_every", "tracking.uri"} <= set(applied)
    cfg, _ = resume(run_dir, [], defaults)
    assert cfg.trainer.steps == 5  # not named: the run's own target


def test_naming_the_saved_value_is_not_a_change(tmp_path, defaults):
    run_dir = saved_run(tmp_path, ["algo=aent"])
    cfg, _ = resume(run_dir, ["algo=aent", "rollout.n=8"], defaults)
    assert cfg.algo.name == "aent"


def test_experiment_preset_on_resume_must_match(tmp_path, defaults):
    run_dir = saved_run(tmp_path, [])
    with pytest.raises(UserError, match="cannot apply on resume"):
        resume(run_dir, ["+experiment=setting_a"], defaults)
