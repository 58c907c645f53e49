"""Issue 16 points 4-5: `--model` mistakes fail fast with exit 2 and no MLflow run; a trained model is
linked to its training run and checkpoint step however it is named."""
import json

import pytest
from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.errors import UserError
from aent_cli.eval.targets import ModelRefError, check_hub_model, looks_like_hub_id, resolve_model
from aent_cli.tracking import store

runner = CliRunner()
# Every test starts from an empty MLflow store at tmp_path/mlflow.db (conftest): no migrations per test.
pytestmark = pytest.mark.usefixtures("mlflow_db")


def _eval(tmp_path, *args):
    return runner.invoke(app, ["eval", *args, "--bench", "aime24", "--limit", "1",
                               f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "tracking.experiment=e"])


def _runs(tmp_path):
    client = store.client(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("e")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def _one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip() and " INFO mlflow." not in line]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_missing_path_under_a_local_folder_is_not_a_hub_id(tmp_path, monkeypatch, shared_data):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AENT_DATA_DIR", str(shared_data))
    (tmp_path / "runs").mkdir()
    assert not looks_like_hub_id("runs/does-not-exist") and looks_like_hub_id("Qwen/Qwen2.5-Math-1.5B")
    with pytest.raises(ModelRefError, match="runs/ is a local folder"):
        resolve_model("runs/does-not-exist")
    line = _one_error_line(_eval(tmp_path, "--model", "runs/does-not-exist"))
    assert "--model runs/does-not-exist" in line
    assert _runs(tmp_path) == []


def test_hub_offline_mode_is_respected_before_any_run(tmp_path, monkeypatch, shared_data):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AENT_DATA_DIR", str(shared_data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelRefError, match="HF_HUB_OFFLINE=1"):
        check_hub_model("someorg/somemodel")
    line = _one_error_line(_eval(tmp_path, "--model", "someorg/somemodel"))
    assert "HF_HUB_OFFLINE=1" in line and len(line) <= 200
    assert _runs(tmp_path) == []


def test_no_mlflow_run_when_the_model_does_not_load(tmp_path, monkeypatch, shared_data):
    from aent_cli.eval import suite

    def broken(cfg):
        raise UserError("model.path=x: cannot load (broken weights)")

    monkeypatch.setenv("AENT_DATA_DIR", str(shared_data))
    monkeypatch.setattr(suite, "load_target", broken)
    line = _one_error_line(_eval(tmp_path, "--model", "tiny"))
    assert "cannot load" in line and _runs(tmp_path) == []


def _trained_run(tmp_path, with_state=True):
    """A training run's output folder as the trainer writes it, and its MLflow run."""
    client = store.client(f"sqlite:///{tmp_path}/mlflow.db")
    exp = store.experiment_id(client, "e")
    run_dir = tmp_path / "runs" / "aent-x"
    run_id = client.create_run(exp, run_name="aent-x", tags={"aent.kind": "train",
                                                             "aent.run_dir": str(run_dir.resolve())}).info.run_id
    store.log_params(client, run_id, {"trainer.steps": "60", "model.prompt_template": "qwen_boxed"})
    for step, acc in ((0, 0.3), (30, 0.7), (60, 0.5)):
        store.log_metrics(client, run_id, {"val/acc": acc}, step)
    for step in (30, 60):
        ckpt = run_dir / "checkpoints" / f"step_{step:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "config.json").write_text("{}")
        if with_state:
            (ckpt / "trainer_state.json").write_text(json.dumps({"step": step, "mlflow_run_id": run_id}))
    (run_dir / "final").mkdir()
    (run_dir / "final" / "config.json").write_text("{}")
    (run_dir / "config.yaml").write_text("trainer:\n  steps: 60\nmodel:\n  prompt_template: qwen_boxed\n")
    return client, run_dir, run_id


@pytest.mark.parametrize("with_state", [True, False])
def test_every_name_of_a_trained_model_links_to_its_run_and_step(tmp_path, with_state):
    client, run_dir, run_id = _trained_run(tmp_path, with_state)
    factory = lambda: client  # noqa: E731
    by_folder = resolve_model(str(run_dir), "best", factory)  # best val/acc with a checkpoint: step 30
    by_ckpt = resolve_model(str(run_dir / "checkpoints" / "step_000030"), "best", factory)
    by_final = resolve_model(str(run_dir / "final"), "best", factory)
    by_id = resolve_model(run_id, "best", factory)
    assert [(t.source_run_id, t.checkpoint, t.step) for t in by_folder] == [(run_id, "step_30", 30)]
    assert [(t.source_run_id, t.checkpoint, t.step) for t in by_ckpt] == [(run_id, "step_30", 30)]
    assert [(t.source_run_id, t.checkpoint, t.step) for t in by_final] == [(run_id, "final", 60)]
    assert [(t.source_run_id, t.checkpoint, t.step) for t in by_id] == [(run_id, "step_30", 30)]
    assert by_folder[0].path == by_ckpt[0].path == by_id[0].path
    assert {t.prompt_template for t in by_folder + by_ckpt + by_final + by_id} == {"qwen_boxed"}


def test_run_folder_without_store_still_links_by_trainer_state(tmp_path):
    _, run_dir, run_id = _trained_run(tmp_path)
    [target] = resolve_model(str(run_dir))  # no store: `best` means final
    assert (target.source_run_id, target.checkpoint, target.step) == (run_id, "final", 60)


def test_report_shows_a_model_evaluated_by_folder_once(tmp_path, monkeypatch):
    from aent_cli.eval.recording import EvalRecorder
    from aent_cli.tracking.report import make_report

    monkeypatch.chdir(tmp_path)
    client, run_dir, run_id = _trained_run(tmp_path)
    store.log_params(client, run_id, {"algo.name": "aent"})
    for ref in (str(run_dir / "checkpoints" / "step_000030"), str(run_dir)):  # the same checkpoint, twice
        [target] = resolve_model(ref, "best", lambda: client)
        recorder = EvalRecorder(client, "e", target, {})
        store.log_metrics(client, recorder.run_id, {"eval/math500/avg_at_4": 0.4}, target.step)
        client.set_terminated(recorder.run_id)
    result = make_report(client, experiment="e", out_dir=tmp_path / "rep", log_to=None)
    assert [(row.label, row.info["checkpoint"], row.info["run"]) for row in result.table.rows] == \
        [("AEnt", "step_30", run_id)]
