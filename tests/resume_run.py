"""One finished 3-step run, shared by the resume tests (test_resume_strict, test_reliability): each test
damages or resumes its own copy. A pytest plugin (conftest.py's pytest_plugins) for the fixtures."""
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aent_cli.cli.app import app

runner = CliRunner()
SHAPE = ["trainer.batch_size=4", "trainer.mini_batch_size=4", "rollout.n=4", "trainer.val_every=0",
         "data.val_size=16", "trainer.threads=1"]


@pytest.fixture(scope="session")
def template(tmp_path_factory, tiny_cache, empty_store):
    """A finished 3-step run with a checkpoint at every step (all kept) and its final model."""
    root = tmp_path_factory.mktemp("template")
    shutil.copyfile(empty_store, root / "mlflow.db")
    result = runner.invoke(app, ["train", f"tracking.uri=sqlite:///{root}/mlflow.db",
                                 f"trainer.output_dir={root}/runs", "trainer.run_name=R", "trainer.steps=3",
                                 "trainer.checkpoint_every=1", "trainer.keep_checkpoints=3", *SHAPE])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def run(template, tmp_path):
    """A private copy of the template run and its store: (run dir, args that resume it to step 4)."""
    shutil.copytree(template / "runs", tmp_path / "runs")
    shutil.copy(template / "mlflow.db", tmp_path / "mlflow.db")
    run_dir = tmp_path / "runs" / "R"
    return run_dir, ["train", f"resume={run_dir}", "trainer.steps=4", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                     f"trainer.output_dir={tmp_path}/runs", *SHAPE]


def ckpt(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:06d}"
