"""SIGTERM (`kill`, `timeout`, Slurm's scancel) stops `aent train` as Ctrl-C does: the MLflow run ends
KILLED, not RUNNING forever, and the handler is removed once the command returns."""
import os
import signal

from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.engine import trainer
from aent_cli.tracking import store


def test_sigterm_during_training_marks_the_run_killed(small_run, tmp_path, monkeypatch):
    real_step = trainer.train_step

    def step_then_term(setup, coef, sampler, step):
        metrics = real_step(setup, coef, sampler, step)
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered inside the command: its handler is installed
        return metrics

    monkeypatch.setattr(trainer, "train_step", step_then_term)
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(app, ["train", *small_run, "trainer.steps=6"])
    assert result.exit_code != 0
    assert signal.getsignal(signal.SIGTERM) is before
    client = store.client(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("aent").experiment_id])
    assert run.info.status == "KILLED"
    # the signal lands as step 2 returns, before its metrics are logged: step 1 is recorded, once
    assert [m.step for m in client.get_metric_history(run.info.run_id, "reward/mean")] == [1]
