"""A training run evaluated by id or folder is prompted with the run's own template, not the default
model group's (`plain`, the tiny model's): an hf run trained with `auto` (its chat template) was
otherwise evaluated on bare problem text."""
from aent_cli.config import compose_config
from aent_cli.eval.suite import target_config
from aent_cli.eval.targets import ModelTarget, resolve_model


def test_the_run_template_wins_over_the_default_group(tmp_path):
    cfg = compose_config([])
    assert cfg.model.prompt_template == "plain"
    run = ModelTarget("RUNID", "smol:final", str(tmp_path), "RUNID", "final", 3, "auto")
    assert target_config(cfg, run).model.prompt_template == "auto"
    plain_model = ModelTarget(str(tmp_path), "m", str(tmp_path))  # a model dir, not a run: the config's
    assert target_config(cfg, plain_model).model.prompt_template == "plain"


def test_a_run_folder_brings_its_saved_template(tmp_path):
    run_dir = tmp_path / "smol-grpo"
    (run_dir / "final").mkdir(parents=True)
    (run_dir / "final" / "config.json").write_text("{}")
    (run_dir / "config.yaml").write_text("model:\n  prompt_template: auto\n")
    (target,) = resolve_model(str(run_dir), "final")
    assert target.prompt_template == "auto" and target.path == str((run_dir / "final").resolve())
