"""One source of defaults: config/schema.py holds every default; a conf/ group file sets only what it
changes on top of it, so no value is stated twice and the two cannot disagree."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from aent_cli.config import compose_config
from aent_cli.config.compose import group_options, project_path
from aent_cli.config.schema import AentConfig

SCHEMA = OmegaConf.to_container(OmegaConf.structured(AentConfig), resolve=False)
GROUP_FILES = sorted(project_path("conf").glob("*/*.yaml"))


def _leaves(node, path=()):
    for key, value in node.items():
        if key == "defaults" and not path:
            continue  # Hydra's defaults list, not a value
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + (key,))
        else:
            yield path + (key,), value


def _schema_value(section: str, path):
    node = SCHEMA[section]
    for part in path:
        node = node[part]
    return node


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_group_file_restates_a_schema_default(path: Path):
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    restated = [".".join(key) for key, value in _leaves(data) if _schema_value(path.parent.name, key) == value]
    assert not restated, f"{path.parent.name}/{path.name} restates the schema's value of {restated}: delete those lines"


def test_the_check_sees_a_restated_value(tmp_path):
    # The rule above must be able to fail: a file that repeats trainer.steps=60 is caught.
    restating = {"steps": SCHEMA["trainer"]["steps"], "lr": 0.5}
    found = [k for k, v in _leaves(restating) if _schema_value("trainer", k) == v]
    assert found == [("steps",)]


def test_every_group_option_composes_the_schema_plus_its_file():
    # What a group file does not set is the schema's value: spot-check one untouched key per group.
    for group, options in group_options().items():
        if group == "experiment":
            continue
        for option in options:
            cfg = compose_config([f"{group}={option}"])
            assert cfg.tracking.log_every == SCHEMA["tracking"]["log_every"]
            assert cfg.trainer.weight_decay == SCHEMA["trainer"]["weight_decay"]
            assert cfg.algo.kl_estimator == SCHEMA["algo"]["kl_estimator"]


def test_default_run_values_come_from_the_default_groups():
    # The default run = schema + conf/algo/aent.yaml (tiny-model band) + conf/rollout/hf.yaml + ...
    cfg = compose_config([])
    aent = OmegaConf.load(project_path("conf") / "algo" / "aent.yaml")
    assert (cfg.algo.h_low, cfg.algo.h_high) == (aent.h_low, aent.h_high)
    assert cfg.algo.h_low != SCHEMA["algo"]["h_low"]  # the schema's is the paper's band, aent.yaml's the tiny model's
    assert cfg.rollout.max_new_tokens == OmegaConf.load(project_path("conf") / "rollout" / "hf.yaml").max_new_tokens
    assert cfg.algo.p == SCHEMA["algo"]["p"] and cfg.trainer.steps == SCHEMA["trainer"]["steps"]
