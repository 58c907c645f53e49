"""Issue 16 points 2-3: typos are refused with the closest key, type errors name the type, and every
config error is one line of at most 200 characters (Hydra's search path only under --verbose)."""
import pytest
from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.config import ConfigError, compose_config
from aent_cli.config import keys

runner = CliRunner()


@pytest.mark.parametrize("override", ["trainer.stpes=5", "+trainer.stpes=5", "++trainer.stpes=5"])
def test_unknown_key_refused_even_with_plus(override):
    with pytest.raises(ConfigError) as err:
        compose_config([override])
    assert str(err.value) == "unknown key trainer.stpes: did you mean trainer.steps?"


@pytest.mark.parametrize("override,suggestion", [
    ("algo.coef.start_stpe=3", "algo.coef.start_step"), ("trainr.steps=3", "trainer.steps"),
    ("+rollout.max_new_token=8", "rollout.max_new_tokens"), ("model.tiny_warmstart=5", "model.tiny_warmstart_steps"),
    ("+tracking.urI=x", "tracking.uri"),
])
def test_every_schema_section_suggests_the_closest_key(override, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean {suggestion}\\?$"):
        compose_config([override])


def test_every_schema_key_is_accepted_and_suggests_itself():
    assert "trainer.steps" in keys.known_keys() and "algo.coef.lr" in keys.known_keys()
    for key in keys.known_keys():
        assert keys.lookup(key)[0] == "known", key
        assert keys.closest(key) == key


def test_plus_still_adds_presets_and_free_form_keys():
    cfg = compose_config(["+experiment=setting_a", "+eval.sources.mybench=/tmp/x.jsonl"])
    assert cfg.model.path == "Qwen/Qwen2.5-Math-1.5B" and cfg.eval.sources.mybench == "/tmp/x.jsonl"


@pytest.mark.parametrize("override,expected", [
    ("trainer.steps=abc", "trainer.steps=abc: expected an integer"),
    ("algo.p=abc", "algo.p=abc: expected a number"),
    ("algo.coef.start_step=2.5", "algo.coef.start_step=2.5: expected an integer"),
    ("trainer.betas=[0.9,x]", "trainer.betas=[0.9,x]: expected a list of numbers"),
    ("trainer.bf16=maybe", "trainer.bf16=maybe: expected a boolean (true/false)"),
    ("algo.coef.start_epoch=x", "algo.coef.start_epoch=x: expected a number or null"),
])
def test_type_errors_name_the_expected_type(override, expected):
    with pytest.raises(ConfigError) as err:
        compose_config([override])
    assert str(err.value) == expected


def test_unknown_group_option_suggests_and_lists_choices():
    with pytest.raises(ConfigError) as err:
        compose_config(["algo=aentt"])
    message = str(err.value)
    assert message.startswith("unknown algo 'aentt' in algo=aentt: did you mean aent?") and "grpo" in message
    with pytest.raises(ConfigError, match="did you mean setting_a"):
        compose_config(["+experiment=settng_a"])


@pytest.mark.parametrize("args", [["train", "trainer.stpes=5"], ["train", "+trainer.stpes=5"],
                                  ["train", "trainer.steps=abc"], ["train", "algo=aentt"],
                                  ["config", "show", "trainer.steps=5,6"], ["eval", "--model", "tiny", "algo=nope"],
                                  ["train", "~trainer.nothere"], ["train", "trainer.steps=="]])
def test_cli_config_errors_are_one_short_line_exit_2(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert len(lines[0]) <= 200 + len("error: ") and "search path" not in lines[0].lower()


def test_verbose_adds_hydra_detail():
    quiet = runner.invoke(app, ["config", "show", "trainer.steps=5,6"])
    loud = runner.invoke(app, ["--verbose", "config", "show", "trainer.steps=5,6"])
    assert quiet.exit_code == loud.exit_code == 2
    assert len(loud.output.splitlines()) > len(quiet.output.splitlines())
    assert "Ambiguous value" in loud.output


@pytest.mark.parametrize("override", ["algo=3", "algo=1.5", "algo=null", "model=true", "trainer=3"])
def test_a_group_choice_that_is_not_a_name_is_one_line(override):
    group = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^unknown {group} .* in {override}: \(choices: "):
        compose_config([override])


def test_an_empty_resume_is_refused_not_a_new_run():
    from aent_cli.config import validate

    with pytest.raises(ConfigError, match="trainer.resume='' is out of range: a run folder"):
        validate(compose_config(["trainer.resume="]))
