"""Issue 16 point 10 (and 9's experiment kind): artifacts live beside the store, not in the working
directory; experiments are marked as model training; tables keep full names when piped."""
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.tracking import store
from aent_cli.tracking.report import make_report

runner = CliRunner()
# Every test starts from an empty MLflow store at tmp_path/mlflow.db (conftest): no migrations per test.
pytestmark = pytest.mark.usefixtures("mlflow_db")


def _one_train_run(uri, name):
    client = store.client(uri)
    run_id = client.create_run(store.experiment_id(client, "e"), run_name=name,
                               tags={"aent.kind": "train"}).info.run_id
    store.log_params(client, run_id, {"algo.name": "aent"})
    store.log_metrics(client, run_id, {"val/acc": 0.5}, 0)
    return client, run_id


def test_artifacts_go_beside_the_sqlite_store(tmp_path, monkeypatch):
    work, home = tmp_path / "work", tmp_path / "stores"
    work.mkdir(), home.mkdir()
    monkeypatch.chdir(work)
    client, run_id = _one_train_run(f"sqlite:///{home}/mlflow.db", "r")
    result = make_report(client, run_ids=[run_id], out_dir=tmp_path / "rep", log_to="e")
    artifact_uri = client.get_run(result.run_id).info.artifact_uri
    assert Path(artifact_uri.removeprefix("file://")).is_relative_to(home / "mlruns")
    assert (Path(artifact_uri.removeprefix("file://")) / "table1.md").is_file()
    assert not (work / "mlruns").exists()
    assert client.get_experiment_by_name("e").tags["mlflow.experimentKind"] == "custom_model_development"


def test_configured_artifact_location_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    client = store.client(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "elsewhere"))
    exp = client.get_experiment(store.experiment_id(client, "x"))
    assert exp.artifact_location.removeprefix("file://") == str(tmp_path / "elsewhere")


def test_older_experiments_get_the_model_training_kind(tmp_path):
    client = store.client(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("old")
    assert "mlflow.experimentKind" not in client.get_experiment(exp).tags
    assert store.experiment_id(client, "old") == exp
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"


def test_piped_report_table_keeps_full_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COLUMNS", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    long_name = "aent-20261130-081500-abcd-with-a-rather-long-descriptive-suffix"
    client, run_id = _one_train_run(uri, long_name)
    result = runner.invoke(app, ["report", "--run", run_id, "--label", f"{run_id}={long_name}", "--no-log",
                                 "--out", str(tmp_path / "rep"), f"tracking.uri={uri}"])
    assert result.exit_code == 0, result.output
    assert long_name in result.output and run_id[:8] in result.output and "…" not in result.output
