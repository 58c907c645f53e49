"""A new run never writes into an existing run's folder, run names are plain folder names, and resume
refuses a damaged run config with one line (exit 2) instead of a traceback."""
import pytest
from typer.testing import CliRunner

from aent_cli.cli.app import app

runner = CliRunner()


def _train(args):
    return runner.invoke(app, ["train", "trainer.threads=1", *args])


def test_an_existing_run_folder_is_never_overwritten(tmp_path):
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("kept: true\n")
    result = _train([f"trainer.output_dir={tmp_path}/runs", "trainer.run_name=r1",
                     f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
    assert result.exit_code == 2, result.output
    assert "already exists" in result.output and "resume=" in result.output
    assert (run_dir / "config.yaml").read_text() == "kept: true\n"
    assert not (tmp_path / "mlflow.db").exists()  # refused before any store or run


@pytest.mark.parametrize("name", ["a/b", "../b", "..", "x/../../y"])
def test_run_names_are_plain_folder_names(tmp_path, name):
    result = _train([f"trainer.output_dir={tmp_path}/runs", f"trainer.run_name={name}",
                     f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
    assert result.exit_code == 2, result.output
    assert "trainer.run_name" in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("override,key", [("reward.workers=100000", "reward.workers"),
                                          ("data.val_size=100000000", "data.val_size")])
def test_sizes_past_what_exists_are_refused(tmp_path, override, key):
    result = _train([f"trainer.output_dir={tmp_path}/runs", override, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
    assert result.exit_code == 2, result.output
    assert key in result.output
    assert not (tmp_path / "runs").exists()


def test_resume_with_a_damaged_run_config_is_one_line(tmp_path, small_run):
    first = _train(small_run + ["trainer.run_name=R", "trainer.steps=1"])
    assert first.exit_code == 0, first.output
    run_dir = tmp_path / "runs" / "R"
    (run_dir / "config.yaml").write_text(": : [\n")
    result = _train([f"resume={run_dir}", "trainer.steps=2", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
    assert result.exit_code == 2, result.output
    assert "config.yaml" in result.output and "Traceback" not in result.output
