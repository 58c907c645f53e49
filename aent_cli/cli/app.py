"""The `aent` command: a thin Typer shell over the library. Each command lives in its own module."""
from __future__ import annotations

from typing import List, Optional

import typer

from aent_cli.cli import config_cmd
from aent_cli.cli.common import OVERRIDES_HELP, not_built

app = typer.Typer(
    name="aent",
    help="Train and evaluate reasoning LLMs with GRPO, EntReg and AEnt (adaptive clamped entropy).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(config_cmd.app, name="config")


@app.command()
def train(overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP)) -> None:
    """Train with GRPO / EntReg / AEnt (default: AEnt on the embedded tiny model)."""
    not_built("train")


@app.command("eval")
def eval_(overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP)) -> None:
    """Evaluate models on the paper's math benchmarks (avg@k, pass@k, maj@k)."""
    not_built("eval")


@app.command()
def sweep(overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP)) -> None:
    """Run a Hydra multirun over p, the entropy bounds or the methods."""
    not_built("sweep")


@app.command()
def ablate(name: str = typer.Argument(..., help="coef | p")) -> None:
    """Run a named ablation of the paper (adaptive vs constant coefficient; different p)."""
    not_built("ablate")


@app.command()
def report() -> None:
    """Build the paper's benchmark table and figures from MLflow runs."""
    not_built("report")


@app.command()
def ui() -> None:
    """Start the MLflow UI on the store aent writes to."""
    not_built("ui")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
