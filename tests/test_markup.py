"""User text in terminal output is shown as typed (issue 15, point 13): rich never reads `[...]` in
run names, labels, overrides or paths as markup."""
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console
from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.cli.sweep_cmd import print_jobs
from aent_cli.tracking.console import TrainConsole
from aent_cli.tracking.tables import Row, ScoreTable, to_rich

runner = CliRunner()
TRICKY = ["eval.benchmarks=[math500,aime24]", "[bold]loud[/bold]", "x[/]", "[red]", "a\\[b]"]


def rendered(renderable) -> str:
    console = Console(record=True, width=400, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()


def test_score_table_shows_labels_headers_info_and_title_verbatim():
    rows = [Row(text, {"m[1]": 0.5}, {"run": text}) for text in TRICKY]
    table = ScoreTable(columns=[("m[1]", "head[er]")], rows=rows, info_columns=["run"],
                       short_info={})
    text = rendered(to_rich(table, title="title [x] [bold]y"))
    for tricky in TRICKY + ["head[er]", "title [x] [bold]y"]:
        assert tricky in text, tricky
    assert "0.500" in text


def test_sweep_dry_run_table_keeps_bracketed_values():
    result = runner.invoke(app, ["sweep", "algo=aent", "eval.benchmarks=[math500,aime24]", "--dry-run"],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "eval.benchmarks=[math500,aime24]" in result.output


def test_print_jobs_and_train_summary_verbatim():
    jobs = [SimpleNamespace(index=0, label=TRICKY[1], text=TRICKY[0])]
    console = Console(record=True, width=400, file=open("/dev/null", "w"))
    print_jobs(SimpleNamespace(name="sweep [x]", jobs=jobs), console)
    text = console.export_text()
    assert TRICKY[0] in text and TRICKY[1] in text and "sweep [x]" in text

    train_console = TrainConsole()
    train_console.console = Console(record=True, width=400, file=open("/dev/null", "w"))
    result = SimpleNamespace(run_dir=Path("/runs/run[bold]1"), run_id="abc", history=[{"reward/mean": 0.5}],
                             val={}, final_model_dir=Path("/runs/run[bold]1/final"))
    train_console.summary(result)
    text = train_console.console.export_text()
    assert "run[bold]1" in text and "/runs/run[bold]1/final" in text
