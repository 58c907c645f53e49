"""`aent eval`: sample k answers per benchmark problem, score avg@k / pass@k / maj@k, record in MLflow."""
from __future__ import annotations

from typing import List, Optional

import typer

from aent_cli.cli.common import OVERRIDES_HELP, load_config, user_errors


def eval_command(
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    model: List[str] = typer.Option([], "--model", "-m",
                                    help="tiny | model dir | training-run folder | MLflow run id | hub id; "
                                         "repeatable (default: model.path)."),
    bench: List[str] = typer.Option([], "--bench", "-b",
                                    help="math_hard | math500 | aime24 | amc23 | minerva | olympiadbench | all; "
                                         "NAME=PATH.jsonl or NAME=hub picks the source; repeatable."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N problems of each benchmark."),
    k: Optional[int] = typer.Option(None, "--k", min=1, help="Samples per problem (default eval.k = 4)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint",
                                             help="For MLflow runs and run folders: best (val/acc) | final | all."),
) -> None:
    """Evaluate models on the paper's math benchmarks (avg@k, pass@k, maj@k)."""
    from rich.console import Console

    from aent_cli.config.preflight import check_eval
    from aent_cli.config import validate
    from aent_cli.eval.suite import run_eval
    from aent_cli.tracking import tables

    overrides = list(overrides or [])
    if needs_hf_group(model, overrides):
        overrides.insert(0, "model=hf")
    cfg = load_config(overrides)
    if model:
        cfg.eval.models = list(model)
    if bench:
        cfg.eval.benchmarks = list(bench)
    for key, value in (("limit", limit), ("k", k), ("checkpoint", checkpoint)):
        if value is not None:
            cfg.eval[key] = value
    with user_errors():
        validate(cfg)
        check_eval(cfg)
        run_eval(cfg, console=tables.console(), progress_console=Console(stderr=True))


def needs_hf_group(models: List[str], overrides: List[str]) -> bool:
    """`--model some/hf-model` should get the `hf` model group (its prompt template and dtype), not
    the default group's settings for the embedded tiny model, unless the user picked a group."""
    from pathlib import Path

    from aent_cli.eval.targets import RUN_ID

    if not models or any(o.lstrip("+~").startswith("model=") for o in overrides):
        return False
    # Training runs (ids or output folders) keep the configured group: their own template is used.
    return not any(m == "tiny" or RUN_ID.match(m) or (Path(m) / "final").is_dir() or (Path(m) / "checkpoints").is_dir()
                   for m in models)
