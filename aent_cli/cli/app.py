"""The `aent` command: a thin Typer shell over the library. Each command lives in its own module."""
from __future__ import annotations

from typing import List, Optional

import typer

from aent_cli.cli import ablate_cmd, config_cmd, eval_cmd, report_cmd, sweep_cmd, ui_cmd
from aent_cli.cli.common import OVERRIDES_HELP

app = typer.Typer(
    name="aent",
    help="Train and evaluate reasoning LLMs with GRPO, EntReg and AEnt (adaptive clamped entropy).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(config_cmd.app, name="config")


@app.callback()
def options(verbose: bool = typer.Option(False, "--verbose", "-v",
                                         help="Full error details (e.g. Hydra's config search path).")) -> None:
    """Train and evaluate reasoning LLMs with GRPO, EntReg and AEnt (adaptive clamped entropy)."""
    from aent_cli.cli import common

    common.VERBOSE["on"] = verbose


@app.command()
def train(overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP)) -> None:
    """Train with GRPO / EntReg / AEnt (default: AEnt on the embedded tiny model)."""
    from aent_cli.cli.train_cmd import train as run

    run(overrides)


app.command("eval")(eval_cmd.eval_command)
app.command("sweep")(sweep_cmd.sweep_command)
app.command("ablate")(ablate_cmd.ablate_command)
app.command("report")(report_cmd.report_command)
app.command("ui")(ui_cmd.ui_command)


def _quiet_libraries() -> None:
    """Keep the terminal for aent's own progress: no per-file bars or INFO lines from libraries."""
    import logging
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow sets its logger's level on import
    for name in ("mlflow", "alembic", "DeepSpeed", "deepspeed"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main() -> None:
    _quiet_libraries()
    app()


if __name__ == "__main__":
    main()
