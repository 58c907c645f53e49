"""`aent report`: Table 1 and the training-curve figures from MLflow runs."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from aent_cli.cli.common import load_config, user_errors
from aent_cli.errors import UserError


def report_command(
    overrides: Optional[List[str]] = typer.Argument(None, help="Hydra overrides, e.g. tracking.uri=sqlite:///x.db"),
    run: List[str] = typer.Option([], "--run", "-r", help="MLflow run id (training or eval run); repeatable."),
    experiment: Optional[str] = typer.Option(None, "--experiment", "-e",
                                             help="Every training and eval run of this MLflow experiment."),
    parent: Optional[str] = typer.Option(None, "--parent", help="A sweep's parent run id: report its child runs."),
    label: List[str] = typer.Option([], "--label", "-l",
                                    help="Row label: RUN_ID=Label (id, id prefix or run name), or plain labels "
                                         "in row order; repeatable."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best (highest average score) | final"),
    score: str = typer.Option("avg", "--score", help="avg | pass | maj (the @k metric shown)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: eval.output_dir)."),
    smooth: float = typer.Option(0.6, "--smooth", min=0.0, max=0.99,
                                 help="EMA weight of the smoothed curve drawn over the raw one (0 = raw only)."),
    log: bool = typer.Option(True, "--log/--no-log", help="Record the report as an MLflow run (aent.kind=report)."),
) -> None:
    """Build the paper's benchmark table and figures from MLflow runs."""

    from aent_cli.config.preflight import check_folder, check_store
    from aent_cli.tracking import store, tables
    from aent_cli.tracking.report import make_report
    from aent_cli.tracking.tables import to_rich

    cfg = load_config(overrides)
    console = tables.console()
    out_dir = out or Path(cfg.eval.output_dir)
    with user_errors():
        check_folder("--out" if out else "eval.output_dir", out_dir)
        check_store(cfg)
        if not store.store_exists(cfg.tracking.uri):  # report only reads: opening it would create one
            raise UserError(f"tracking.uri: the store {store.tracking_uri(cfg.tracking.uri)} does not exist")
        result = make_report(store.client(cfg.tracking.uri, cfg.tracking.artifact_location), run_ids=run, experiment=experiment, parent=parent,
                             labels=label, checkpoint=checkpoint, score=score,
                             out_dir=out_dir,
                             log_to=(experiment or cfg.tracking.experiment) if log else None, smoothing=smooth)
    console.print(to_rich(result.table, title=f"{result.title}, checkpoint: {checkpoint}"))
    for path in result.files:
        console.print(f"wrote {path}", markup=False)
    if result.run_id:
        console.print(f"MLflow report run: {result.run_id}")

