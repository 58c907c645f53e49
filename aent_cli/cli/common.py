"""What every command shares: compose + validate the config, and turn user errors into exit 2."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

import typer
from omegaconf import DictConfig

from aent_cli.config import compose_config, validate
from aent_cli.errors import UserError

OVERRIDES_HELP = "Hydra overrides, e.g. algo=aent algo.p=0.25 trainer.steps=50 (+experiment=setting_a)"


def fail(message: str) -> "typer.Exit":
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Report a UserError (ConfigError, DataError, ...) as one line on stderr and exit 2."""
    try:
        yield
    except UserError as exc:
        fail(str(exc))


def load_config(overrides: Optional[Iterable[str]]) -> DictConfig:
    with user_errors():
        return validate(compose_config(list(overrides or [])))
