"""`aent eval` end to end on the embedded tiny model: real generation, real grading, a real MLflow store.

The tiny model scores ~0 on the real benchmarks (and little on arithmetic), so one benchmark reads a
file of arithmetic prompts whose reference answers are set from the model's own greedy answers for
the first three and to an answer it never gives for the last two: with greedy decoding the scores
are then known exactly (avg@2 = pass@2 = maj@2 = 0.6) and are checked in MLflow and the artifacts.
"""
import json

import pytest
from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.config import compose_config
from aent_cli.data.arithmetic import test_problems as arithmetic_test_problems
from aent_cli.models.loading import load_policy
from aent_cli.rewards import extract_answer
from aent_cli.rollout import SamplingParams, build_rollout
from aent_cli.tracking import store
from aent_cli.tracking.report import make_report

runner = CliRunner()
GREEDY = SamplingParams(n=2, temperature=0.0, max_new_tokens=12)


@pytest.fixture
def arithmetic_jsonl(tmp_path):
    cfg = compose_config([])
    model, tokenizer = load_policy(cfg.model, "cpu")
    problems = arithmetic_test_problems()[:40]
    outputs = build_rollout(cfg.rollout, model, tokenizer).generate([p.problem for p in problems], GREEDY)
    answered = [(p, extract_answer(o.completions[0].text)) for p, o in zip(problems, outputs)]
    answered = [(p, a) for p, a in answered if a is not None][:5]
    assert len(answered) == 5
    rows = [{"id": p.id, "problem": p.problem, "answer": a if i < 3 else "-77"} for i, (p, a) in enumerate(answered)]
    path = tmp_path / "arith.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path, rows


def _table(client, run_id, artifact, tmp_path):
    local = client.download_artifacts(run_id, artifact, str(tmp_path))
    data = json.loads(open(local).read())
    return [dict(zip(data["columns"], row)) for row in data["data"]]


def test_eval_tiny_records_mlflow_run_and_tables(tmp_path, monkeypatch, shared_data, arithmetic_jsonl, mlflow_db):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    path, expected_rows = arithmetic_jsonl
    result = runner.invoke(app, ["eval", "--model", "tiny", "--bench", f"math500={path}", "--bench", "aime24",
                                 "--limit", "5", "--k", "2", "eval.max_new_tokens=12", "eval.temperature=0",
                                 f"tracking.uri={uri}",
                                 f"eval.data_dir={shared_data}/benchmarks", f"eval.output_dir={tmp_path}/reports",
                                 "tracking.experiment=evals"])
    assert result.exit_code == 0, result.output
    assert "MATH-500" in result.output and "AIME24" in result.output

    client = store.client(uri)
    runs = client.search_runs([client.get_experiment_by_name("evals").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["aent.kind"] == "eval"
    assert run.data.params["eval.k"] == "2" and run.data.params["model.path"] == "tiny"
    assert run.data.tags["aent.prompt_template.math500"] == "plain"  # the tiny model group's template
    metrics = run.data.metrics
    assert metrics["eval/aime24/problems"] == 5 and metrics["eval/math500/problems"] == 5
    assert {"eval/math500/avg_at_2", "eval/math500/pass_at_2", "eval/math500/maj_at_2", "eval/aime24/avg_at_2",
            "eval/aime24/timeouts"} <= set(metrics)

    rows = _table(client, run.info.run_id, "problems/math500.json", tmp_path / "dl")
    assert [r["id"] for r in rows] == [r["id"] for r in expected_rows]
    assert [r["correct"] for r in rows] == [[True, True]] * 3 + [[False, False]] * 2
    assert all(len(r["responses"]) == 2 and r["majority"] == r["extracted"][0] for r in rows)
    for score in ("avg", "pass", "maj"):
        assert metrics[f"eval/math500/{score}_at_2"] == pytest.approx(0.6)
    assert metrics["eval/math500/timeouts"] == 0

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.csv", "summary.md", "problems"} <= artifacts
    summaries = list((tmp_path / "reports").glob("eval-*/summary.md"))
    assert len(summaries) == 1 and "| tiny |" in summaries[0].read_text()

    # The eval run feeds `aent report` directly (a row for a plain model).
    report = make_report(client, run_ids=[run.info.run_id], out_dir=tmp_path / "rep", log_to=None)
    assert report.table.rows[0].values["math500"] == pytest.approx(metrics["eval/math500/avg_at_2"])
