"""`aent config show`: print the composed config as YAML."""
from __future__ import annotations

from typing import List, Optional

import typer
from omegaconf import OmegaConf

from aent_cli.cli.common import OVERRIDES_HELP, load_config

app = typer.Typer(help="Inspect the composed Hydra config.", no_args_is_help=True)


@app.command("show")
def show(
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    resolve: bool = typer.Option(False, "--resolve", help="Resolve ${...} interpolations."),
) -> None:
    """Print the config `aent train` would run with these overrides."""
    cfg = load_config(overrides)
    typer.echo(OmegaConf.to_yaml(cfg, resolve=resolve), nl=False)
