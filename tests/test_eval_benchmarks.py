"""The benchmark registry against the shared files, and `aent eval`'s input errors (exit 2, one line,
before any model is loaded)."""
import json

import pytest
from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.eval.benchmarks import BENCHMARKS, BenchmarkError, benchmark_names, load_benchmark, resolve_source
from aent_cli.eval.targets import ModelRefError, resolve_model

runner = CliRunner()
# Every test starts from an empty MLflow store at tmp_path/mlflow.db (conftest): no migrations per test.
pytestmark = pytest.mark.usefixtures("mlflow_db")
EXPECTED_ROWS = {"math500": 500, "aime24": 30, "amc23": 40, "minerva": 272, "olympiadbench": 675, "math_hard": 1324}


@pytest.mark.parametrize("name,rows", sorted(EXPECTED_ROWS.items()))
def test_each_benchmark_file_loads_with_its_row_count(shared_data, name, rows):
    problems = load_benchmark(resolve_source(name, None, str(shared_data / "benchmarks")))
    assert len(problems) == rows == BENCHMARKS[name].size
    assert len({p.id for p in problems}) == rows
    assert all(p.problem.strip() and p.answer.strip() for p in problems)


def test_limit_takes_the_first_problems(shared_data):
    source = resolve_source("aime24", None, str(shared_data / "benchmarks"))
    first = json.loads((shared_data / "benchmarks" / "aime24.jsonl").read_text().splitlines()[0])
    problems = load_benchmark(source, limit=3)
    assert len(problems) == 3 and problems[0].id == first["id"] and problems[0].answer == first["answer"]


def test_all_expands_in_table_order_and_sources_are_kept():
    assert [n for n, _ in benchmark_names(["all"])] == list(BENCHMARKS)
    assert benchmark_names(["aime24=/x.jsonl", "math500", "aime24=/x.jsonl"]) == [("aime24", "/x.jsonl"),
                                                                                   ("math500", None)]


def test_bad_benchmark_inputs(tmp_path):
    with pytest.raises(BenchmarkError, match="unknown benchmark 'gsm8k'"):
        benchmark_names(["gsm8k"])
    with pytest.raises(BenchmarkError, match="math500.jsonl not found"):
        resolve_source("math500", None, str(tmp_path))
    assert resolve_source("math500", "hub", str(tmp_path)).spec == "HuggingFaceH4/MATH-500"
    assert resolve_source("math500", "org/copy", str(tmp_path)).is_hub
    with pytest.raises(BenchmarkError, match="neither a file"):
        resolve_source("math500", str(tmp_path / "missing.jsonl"), str(tmp_path))


def test_model_references(tmp_path):
    assert resolve_model("tiny")[0].path == "tiny"
    assert resolve_model("Qwen/Qwen2.5-Math-1.5B")[0].path == "Qwen/Qwen2.5-Math-1.5B"
    with pytest.raises(ModelRefError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelRefError, match="not 'tiny'"):
        resolve_model(str(tmp_path / "nope"))
    run = tmp_path / "run"
    for step in (10, 20):
        (run / "checkpoints" / f"step_{step}").mkdir(parents=True)
    (run / "final").mkdir()
    assert resolve_model(str(run))[0].path == str(run / "final")
    assert [t.checkpoint for t in resolve_model(str(run), "all")] == ["step_10", "step_20", "final"]


def test_training_run_checkpoints(tmp_path, monkeypatch):
    from aent_cli.tracking import store

    monkeypatch.chdir(tmp_path)
    client = store.client(f"sqlite:///{tmp_path}/mlflow.db")
    exp = store.experiment_id(client, "t")
    run_dir = tmp_path / "runs" / "r1"
    for step in (10, 20):  # step 30's checkpoint was pruned (keep_checkpoints)
        (run_dir / "checkpoints" / f"step_{step}").mkdir(parents=True)
    (run_dir / "final").mkdir()
    run_id = client.create_run(exp, run_name="r1", tags={"aent.kind": "train", "aent.run_dir": str(run_dir)}).info.run_id
    store.log_params(client, run_id, {"trainer.steps": "40", "model.prompt_template": "plain"})
    for step, acc in ((0, 0.1), (10, 0.4), (20, 0.3), (30, 0.9), (40, 0.35)):
        store.log_metrics(client, run_id, {"val/acc": acc}, step)

    def resolve(choice):
        return resolve_model(run_id, choice, lambda: client)

    best = resolve("best")  # 0.9 at step 30 has no checkpoint left: step 10 (0.4) beats final (0.35)
    assert [(t.checkpoint, t.step, t.source_run_id) for t in best] == [("step_10", 10, run_id)]
    assert best[0].path == str(run_dir / "checkpoints" / "step_10") and best[0].prompt_template == "plain"
    assert [(t.checkpoint, t.step) for t in resolve("final")] == [("final", 40)]
    assert [t.checkpoint for t in resolve("all")] == ["step_10", "step_20", "final"]

    other = client.create_run(exp, run_name="x").info.run_id
    with pytest.raises(ModelRefError, match="no aent.run_dir tag"):
        resolve_model(other, "best", lambda: client)
    with pytest.raises(ModelRefError, match="unknown MLflow run id"):
        resolve_model("a" * 32, "best", lambda: client)


def _cli(args, tmp_path):
    return runner.invoke(app, ["eval", *args, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])


def _one_line(result):
    # MLflow itself logs two INFO lines when it creates a fresh SQLite store; they are not ours.
    lines = [line for line in result.output.splitlines() if line.strip() and " INFO mlflow." not in line]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


def test_cli_unknown_benchmark_is_one_line(tmp_path):
    assert "unknown benchmark 'nope'" in _one_line(_cli(["--bench", "nope"], tmp_path))
    assert "unknown benchmark 'math5000': did you mean math500?" in _one_line(_cli(["--bench", "math5000"], tmp_path))


def test_cli_missing_data_dir(tmp_path):
    line = _one_line(_cli(["--bench", "aime24", f"eval.data_dir={tmp_path}"], tmp_path))
    assert "aime24.jsonl not found" in line


def test_cli_bad_model_path(tmp_path, shared_data):
    line = _one_line(_cli(["--model", str(tmp_path / "nope"), "--bench", "aime24",
                           f"eval.data_dir={shared_data}/benchmarks"], tmp_path))
    assert str(tmp_path / "nope") in line


def test_cli_unknown_run_id(tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _one_line(_cli(["--model", "0" * 32, "--bench", "aime24", f"eval.data_dir={shared_data}/benchmarks"],
                          tmp_path))
    assert "unknown MLflow run id" in line


def test_cli_run_id_without_a_store_creates_none(tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "elsewhere" / "mlflow.db"
    missing.parent.mkdir()
    line = _one_line(runner.invoke(app, ["eval", "--model", "0" * 32, "--bench", "aime24",
                                         f"eval.data_dir={shared_data}/benchmarks", f"tracking.uri=sqlite:///{missing}"]))
    assert f"no MLflow store at sqlite:///{missing}" in line and "tracking.uri" in line
    assert not missing.exists()  # not created (and migrated) just to find no run in it


def test_cli_bad_checkpoint_choice(tmp_path):
    assert "eval.checkpoint" in _one_line(_cli(["--checkpoint", "latest"], tmp_path))
