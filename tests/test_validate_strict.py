"""Validation that nothing non-finite or unrecordable gets past the config (issue 15, points 4 and 12):
every numeric key of the schema refuses nan / inf / -inf with a message naming it, and config keys
MLflow would reject are refused up front (exit 2, before any run exists)."""
import copy
import dataclasses
import typing

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError
from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.config import ConfigError, compose_config, validate
from aent_cli.config.schema import AentConfig
from aent_cli.config.validate import mlflow_key_problem

runner = CliRunner()


def numeric_keys(cls=AentConfig, prefix=""):
    """(dotted key, kind) for every int / float / List[float] field of the schema, found by reflection
    so a field added later is covered too."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        base = args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp
        if dataclasses.is_dataclass(base):
            yield from numeric_keys(base, f"{prefix}{f.name}.")
        elif base in (int, float) and base is not bool:
            yield f"{prefix}{f.name}", base.__name__
        elif typing.get_origin(base) in (list, typing.List) and typing.get_args(base) == (float,):
            yield f"{prefix}{f.name}", "list"


NUMERIC = list(numeric_keys())


def test_the_sweep_covers_the_schema():
    keys = dict(NUMERIC)
    assert len(keys) > 40
    assert keys["rollout.temperature"] == "float" and keys["trainer.lr"] == "float"
    assert keys["algo.coef.start_epoch"] == "float" and keys["trainer.betas"] == "list"


@pytest.fixture(scope="module")
def base_cfg():
    return compose_config([])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_every_numeric_key_refuses_non_finite_values(bad, base_cfg):
    """Set each key as a Hydra override does (the typed node converts or refuses the value), then
    validate: an int key refuses at assignment, a float key in validate, each naming the key."""
    passed = []
    for key, kind in NUMERIC:
        cfg = copy.deepcopy(base_cfg)
        try:
            OmegaConf.update(cfg, key, [bad, 0.999] if kind == "list" else bad, merge=False)
            validate(cfg)
        except ValidationError as exc:
            assert kind == "int" and key.rsplit(".", 1)[-1] in str(exc), (key, str(exc))
            continue
        except ConfigError as exc:
            assert kind != "int" and key in str(exc) and "finite" in str(exc), (key, str(exc))
            continue
        passed.append(key)
    assert passed == []


@pytest.mark.parametrize("override", ["trainer.steps=nan", "rollout.n=inf", "algo.p=nan", "trainer.betas=[-inf,0.9]"])
def test_composed_overrides_refuse_non_finite_values(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        validate(compose_config([override]))


@pytest.mark.parametrize("override", ["rollout.temperature=nan", "trainer.lr=nan", "reward.timeout_s=inf"])
def test_cli_exits_2_before_any_work(override, tmp_path):
    """One line naming the key, exit 2, and no run folder or MLflow store made."""
    result = runner.invoke(app, ["train", override, f"trainer.output_dir={tmp_path}/runs",
                                 f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
    assert result.exit_code == 2
    assert override.split("=")[0] in result.output and "finite" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["lr@bs", "a/../b", "/abs", "x" * 300, "café?", "a//b"])
def test_mlflow_key_rule_matches_mlflow(key):
    """The local rule agrees with MLflow's own validator (the independent reference)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_length_limit, _validate_param_name

    try:
        _validate_param_name(key)
        _validate_length_limit("Param key", 250, key)
        mlflow_ok = True
    except MlflowException:
        mlflow_ok = False
    assert (mlflow_key_problem(key) == "") == mlflow_ok
    for good in ("algo.p", "notes.lr_bs", "eval.sources.math-500", "a b:c/d"):
        assert mlflow_key_problem(good) == ""
        _validate_param_name(good)


def test_rejected_user_key_is_exit_2_before_the_run(tmp_path):
    result = runner.invoke(app, ["train", "notes={lr@bs:1}", f"trainer.output_dir={tmp_path}/runs",
                                 f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
    assert result.exit_code == 2
    assert "notes.lr@bs" in result.output and "MLflow" in result.output
    assert list(tmp_path.iterdir()) == []  # no store, no run folder
