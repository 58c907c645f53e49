"""data=word_problems: generated problems with correct integer answers, a fixed held-out split that
the train draw never contains, and one-line errors for bad settings."""
import re

import pytest
from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.config import compose_config, validate
from aent_cli.data.word_problems import held_out_size, word_problems
from aent_cli.engine.setup import load_split


def _value(text: str) -> int:
    nums = [int(n) for n in re.findall(r"\d+", text)]
    if text.startswith("What is"):
        return nums[0] + nums[1]
    if "gives away" in text:
        return nums[0] - nums[1]
    if "bags with" in text:
        return nums[0] * nums[1]
    return nums[0] + nums[1]


@pytest.mark.parametrize("digits", [1, 2])
def test_answers_splits_and_determinism(digits):
    test = word_problems(held_out_size(digits), 0, "test", digits)
    train = word_problems(500, 3, "train", digits)
    assert all(str(_value(p.problem)) == p.answer for p in test + train)
    assert not {p.problem for p in test} & {p.problem for p in train}
    assert [p.problem for p in word_problems(500, 3, "train", digits)] == [p.problem for p in train]
    assert len({p.problem for p in test}) == len(test)


def test_config_group_and_errors():
    cfg = validate(compose_config(["data=word_problems"]))
    assert cfg.data.word_problems_digits == 1
    assert len(load_split(cfg, "train")) == 4096 and len(load_split(cfg, "val")) == 16
    result = CliRunner().invoke(app, ["train", "data=word_problems", "data.val_size=17"])
    assert result.exit_code == 2 and "data.val_size=17" in result.output
    result = CliRunner().invoke(app, ["train", "data=word_problems", "data.word_problems_digits=3"])
    assert result.exit_code == 2 and "data.word_problems_digits=3" in result.output
