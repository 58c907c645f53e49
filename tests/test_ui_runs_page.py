"""Issue 16 point 9: `aent ui` prints the experiment's runs page; a headless Chromium check (skipped
without Chromium) loads it and finds the run listed, and saves a screenshot."""
import importlib.util
import shutil
from pathlib import Path

import pytest

from aent_cli.cli.ui_cmd import runs_url
from aent_cli.tracking import store

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ui_screenshot.py"


def test_runs_url_points_at_the_experiments_runs(mlflow_db):
    uri = f"sqlite:///{mlflow_db}"
    client = store.client(uri)
    legacy = client.create_experiment("aent")  # as an older aent made it: no experiment kind
    assert runs_url("http://127.0.0.1:5000", uri, "aent") == \
        f"http://127.0.0.1:5000/#/experiments/{legacy}/runs?workflowType=machine_learning"
    assert client.get_experiment(legacy).tags["mlflow.experimentKind"] == "custom_model_development"
    assert runs_url("http://127.0.0.1:5000", uri, "other") == "http://127.0.0.1:5000"


@pytest.mark.skipif(not any(map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
                    reason="needs Chromium (Debian: apt-get install -y chromium)")
def test_printed_url_shows_the_runs_in_a_browser(tmp_path, mlflow_db):  # make_store opens it
    spec = importlib.util.spec_from_file_location("ui_screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen = module.check_ui(tmp_path, tmp_path / "ui.png")
    assert "/#/experiments/" in seen["url"] and seen["url"].endswith("/runs?workflowType=machine_learning")
    assert seen["run_listed"], seen
    assert seen["screenshot"] is not None and seen["screenshot"].stat().st_size > 10_000
