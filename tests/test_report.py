"""`aent report` on small runs written straight into a temporary MLflow store: Table 1 values and
best marks, checkpoint choice, val/acc fallback, sweep children, figures, the report run."""
import csv
import io

import pytest
from PIL import Image
from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.errors import UserError
from aent_cli.tracking import store
from aent_cli.tracking.figures import plot_metric_over_steps, smooth
from aent_cli.tracking.report import make_report

runner = CliRunner()
STEPS = range(0, 21, 2)


@pytest.fixture
def mlstore(tmp_path, monkeypatch, mlflow_db):
    monkeypatch.chdir(tmp_path)  # artifacts of a fresh SQLite store go under ./mlruns
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = store.client(uri)
    exp = store.experiment_id(client, "paper")
    parent = client.create_run(exp, run_name="sweep", tags={"aent.kind": "sweep"}).info.run_id

    def train(name, algo, val, entropy0):
        run = client.create_run(exp, run_name=name, tags={"aent.kind": "train", "mlflow.parentRunId": parent})
        run_id = run.info.run_id
        store.log_params(client, run_id, {"algo.name": algo, "data.val": "/data/benchmarks/math500.jsonl"})
        for step in STEPS:
            store.log_metrics(client, run_id, {"actor/entropy": entropy0 - 0.01 * step,
                                               "actor/clamped_entropy": 0.5 * entropy0 - 0.005 * step,
                                               "response_length/mean": 10 + step, "actor/entropy_coef": 0.002 + 1e-4 * step},
                              step)
        for step, value in val.items():
            store.log_metrics(client, run_id, {"val/acc": value}, step)
        client.set_terminated(run_id)
        return run_id

    def evaluation(scores, source=None, checkpoint="", step=None, model="m"):
        tags = {"aent.kind": "eval", "aent.model": model}
        if source:
            tags.update({"aent.source_run_id": source, "aent.checkpoint": checkpoint,
                         "aent.checkpoint_step": "" if step is None else str(step)})
        run_id = client.create_run(exp, run_name=f"eval-{model}", tags=tags).info.run_id
        store.log_metrics(client, run_id, {f"eval/{b}/{s}_at_4": v for b, d in scores.items() for s, v in d.items()},
                          step or 0)
        client.set_terminated(run_id)
        return run_id

    aent = train("aent-run", "aent", {0: 0.2, 10: 0.5, 20: 0.4}, 1.0)
    grpo = train("grpo-run", "grpo", {0: 0.1, 10: 0.3, 20: 0.35}, 0.8)
    # AEnt's step_10 averages 0.4 over the two benchmarks, its final checkpoint 0.375: best = step_10.
    evaluation({"math500": {"avg": 0.6, "pass": 0.8, "maj": 0.65}, "aime24": {"avg": 0.2}}, aent, "step_10", 10)
    evaluation({"math500": {"avg": 0.5}, "aime24": {"avg": 0.25}}, aent, "final", 20)
    evaluation({"math500": {"avg": 0.3}, "aime24": {"avg": 0.25}}, model="Qwen-base")
    return {"client": client, "uri": uri, "aent": aent, "grpo": grpo, "parent": parent, "tmp": tmp_path}


def _rows(result):
    return {row.label: row for row in result.table.rows}


def test_table_values_best_checkpoint_and_val_fallback(mlstore):
    result = make_report(mlstore["client"], experiment="paper", out_dir=mlstore["tmp"] / "rep", log_to="paper")
    rows = _rows(result)
    assert [row.label for row in result.table.rows] == ["Qwen-base", "AEnt", "GRPO"]  # base first, then run order
    assert rows["AEnt"].values == {"math500": 0.6, "aime24": 0.2, "avg": pytest.approx(0.4)}
    assert rows["AEnt"].info["checkpoint"] == "step_10"
    # GRPO has no eval runs: its best val/acc (0.35 at step 20) fills the math500 column (data.val).
    assert rows["GRPO"].values["math500"] == 0.35 and rows["GRPO"].values["avg"] is None
    assert rows["GRPO"].info == {"checkpoint": "step_20", "source": "val/acc", "run": mlstore["grpo"]}
    assert [key for key, _ in result.table.columns] == ["math500", "aime24", "avg"]  # paper's column order

    md = (mlstore["tmp"] / "rep" / "table1.md").read_text()
    aent_line = next(line for line in md.splitlines() if line.startswith("| AEnt"))
    base_line = next(line for line in md.splitlines() if line.startswith("| Qwen-base"))
    assert "**0.600**" in aent_line and "**0.250**" in base_line and "**0.200**" not in aent_line
    assert "| MATH-500 | AIME24 | Avg |" in md

    table = list(csv.DictReader(io.StringIO((mlstore["tmp"] / "rep" / "table1.csv").read_text())))
    by_label = {row["label"]: row for row in table}
    assert float(by_label["Qwen-base"]["aime24"]) == 0.25 and by_label["Qwen-base"]["best_in"] == "aime24"
    assert by_label["GRPO"]["aime24"] == "" and by_label["AEnt"]["best_in"] == "math500;avg"


def test_final_checkpoint_and_other_scores(mlstore):
    final = _rows(make_report(mlstore["client"], run_ids=[mlstore["aent"], mlstore["grpo"]], checkpoint="final",
                              out_dir=mlstore["tmp"] / "f", log_to=None))
    assert final["AEnt"].values["aime24"] == 0.25 and final["AEnt"].info["checkpoint"] == "final"
    assert final["GRPO"].values["math500"] == 0.35  # last val/acc
    ordered = make_report(mlstore["client"], run_ids=[mlstore["grpo"], mlstore["aent"]], labels=["G", "A"],
                          out_dir=mlstore["tmp"] / "o", log_to=None)
    assert [(row.label, row.info["run"]) for row in ordered.table.rows] == [("G", mlstore["grpo"]),
                                                                           ("A", mlstore["aent"])]
    passes = _rows(make_report(mlstore["client"], run_ids=[mlstore["aent"]], score="pass",
                               out_dir=mlstore["tmp"] / "p", log_to=None))
    assert passes["AEnt"].values == {"math500": 0.8}


def test_sweep_children_labels_and_figures(mlstore):
    result = make_report(mlstore["client"], parent=mlstore["parent"], labels=["grpo-run=Plain GRPO"],
                         out_dir=mlstore["tmp"] / "sweep", log_to="paper")
    assert set(_rows(result)) == {"AEnt", "Plain GRPO"}
    names = {path.name for path in result.files}
    assert {"table1.md", "table1.csv", "fig3_test_score.png", "fig4_entropy_length.png", "entropy_coef.png"} <= names
    for path in result.files:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
            with Image.open(path) as image:
                assert image.width >= 500 and image.height >= 400
    wide = Image.open(mlstore["tmp"] / "sweep" / "fig4_entropy_length.png")
    assert wide.width > 2.5 * wide.height  # three panels side by side

    report_run = mlstore["client"].get_run(result.run_id)
    assert report_run.data.tags["aent.kind"] == "report"
    logged = {a.path for a in mlstore["client"].list_artifacts(result.run_id)}
    assert {"table1.md", "table1.csv", "fig3_test_score.png"} <= logged


def test_bad_inputs_are_user_errors(mlstore):
    client = mlstore["client"]
    with pytest.raises(UserError, match="unknown MLflow run id"):
        make_report(client, run_ids=["f" * 32], log_to=None)
    with pytest.raises(UserError, match="unknown MLflow experiment"):
        make_report(client, experiment="nope", log_to=None)
    with pytest.raises(UserError, match="nothing to report"):
        make_report(client, log_to=None)
    with pytest.raises(UserError, match="no selected run"):
        make_report(client, run_ids=[mlstore["aent"]], labels=["zzz=X"], log_to=None)


def test_cli_report(mlstore):
    out = mlstore["tmp"] / "cli"
    result = runner.invoke(app, ["report", "--experiment", "paper", "--out", str(out), "--label", "Qwen-base=Base",
                                 f"tracking.uri={mlstore['uri']}"])
    assert result.exit_code == 0, result.output
    assert "AEnt" in result.output and "Base" in result.output and (out / "table1.md").is_file()
    bad = runner.invoke(app, ["report", "--run", "0" * 32, f"tracking.uri={mlstore['uri']}"])
    assert bad.exit_code == 2 and "unknown MLflow run id" in bad.output


def test_figure_helper_and_smoothing(tmp_path):
    assert smooth([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]
    path = plot_metric_over_steps({"a": [(0, 1.0), (1, 2.0)], "b": []}, "T", "y", tmp_path / "x" / "f.png")
    assert path.is_file() and path.stat().st_size > 5_000


def test_cli_report_on_a_store_that_does_not_exist_creates_none(tmp_path):
    from typer.testing import CliRunner

    from aent_cli.cli.app import app

    result = CliRunner().invoke(app, ["report", "--experiment", "nope", f"tracking.uri=sqlite:///{tmp_path}/none.db",
                                      "--out", str(tmp_path / "rep")])
    assert result.exit_code == 2 and "does not exist" in result.output, result.output
    assert not (tmp_path / "none.db").exists()
