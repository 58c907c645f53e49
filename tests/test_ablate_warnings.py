"""Issue 16 point 7: an ablation whose arms cannot differ says so before it runs."""
from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.config import compose_config
from aent_cli.sweep.arm_checks import coef_start_step, identical_arm_warnings

runner = CliRunner()


def _arms(*common):
    return [compose_config(["algo=aent", "algo.coef.mode=adaptive", *common]),
            compose_config(["algo=aent", "algo.coef.mode=constant", *common])]


def test_steps_ending_before_lambdas_first_update_warns():
    # algo=aent updates lambda first at step 5; the value is used from step 6 on
    assert coef_start_step(_arms()[0], 4096) == 5
    [line] = identical_arm_warnings(["adaptive", "constant"], _arms("trainer.steps=3"))
    assert "job 'adaptive'" in line and "trainer.steps=3" in line and "step 5" in line
    assert identical_arm_warnings(["adaptive", "constant"], _arms("trainer.steps=5"))
    assert identical_arm_warnings(["adaptive", "constant"], _arms("trainer.steps=6")) == []


def test_start_epoch_and_zero_lr_and_no_bonus():
    # start_epoch=2 with 64 problems in batches of 8: the first step of epoch 2 is step 9
    arms = _arms("algo.coef.start_epoch=2", "trainer.steps=9")
    assert coef_start_step(arms[0], 64) == 9 and identical_arm_warnings(["a", "c"], arms, 64)
    assert identical_arm_warnings(["a", "c"], arms, 0) == []  # unknown train size: no guess
    assert "algo.coef.lr=0" in identical_arm_warnings(["a", "c"], _arms("algo.coef.lr=0"))[0]
    assert "algo.bonus=none" in identical_arm_warnings(["a", "c"], _arms("algo.bonus=none"))[0]


def test_identical_jobs_warn():
    same = [compose_config(["algo.p=0.2", "trainer.run_name=a"]), compose_config(["algo.p=0.2", "trainer.run_name=b"])]
    [line] = identical_arm_warnings(["x", "y"], same)
    assert "'x' and 'y' have the same training config" in line
    assert identical_arm_warnings(["x", "y"], [same[0], compose_config(["algo.p=0.3"])]) == []


def test_cli_warns_before_running(tmp_path):
    result = runner.invoke(app, ["ablate", "coef", "trainer.steps=3", "--dry-run",
                                 f"tracking.uri=sqlite:///{tmp_path}/m.db", f"trainer.output_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert "warning: job 'adaptive': lambda never changes (trainer.steps=3" in result.output
    ok = runner.invoke(app, ["ablate", "coef", "trainer.steps=8", "--dry-run",
                             f"tracking.uri=sqlite:///{tmp_path}/m.db", f"trainer.output_dir={tmp_path}"])
    assert ok.exit_code == 0 and "warning" not in ok.output
