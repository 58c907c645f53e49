"""What every command shares: compose + validate the config, and turn user errors into exit 2."""
from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

import typer
from omegaconf import DictConfig

from aent_cli.config import compose_config, validate
from aent_cli.errors import UserError

OVERRIDES_HELP = "Hydra overrides, e.g. algo=aent algo.p=0.25 trainer.steps=50 (+experiment=setting_a)"


VERBOSE = {"on": False}  # set per invocation by `aent --verbose`


def verbose() -> bool:
    """`aent --verbose ...` (or AENT_VERBOSE=1): errors also print their full detail."""
    return VERBOSE["on"] or os.environ.get("AENT_VERBOSE", "") not in ("", "0")


def fail(message: str, detail: Optional[str] = None) -> "typer.Exit":
    typer.echo(f"error: {message}", err=True)
    if detail and verbose():
        typer.echo(detail, err=True)
    raise typer.Exit(code=2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Report a UserError (ConfigError, DataError, ...) as one line on stderr and exit 2; with
    --verbose, also the error's `detail` (e.g. Hydra's full message with its config search path)."""
    try:
        yield
    except UserError as exc:
        fail(str(exc), getattr(exc, "detail", None))


def load_config(overrides: Optional[Iterable[str]]) -> DictConfig:
    with user_errors():
        return validate(compose_config(list(overrides or [])))


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM (`kill`, `timeout`, Slurm's scancel and end of walltime) stops the command
    the way Ctrl-C does: a training run is marked KILLED in MLflow instead of staying RUNNING."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
