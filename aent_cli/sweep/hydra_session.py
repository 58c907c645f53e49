"""A Hydra session on the project's `conf/` (schema and experiments registered), for the parts of a
sweep that need Hydra's own machinery: the override parser (glob() lists config-group options) and
the launcher plugins."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from aent_cli.config.compose import register_schema_and_experiments, project_path


@contextmanager
def hydra_session() -> Iterator[object]:
    """Yields Hydra's config loader; the session ends (GlobalHydra cleared) on exit."""
    register_schema_and_experiments()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(project_path("conf")), version_base=None):
        yield GlobalHydra.instance().config_loader()


def hydra_message(exc: BaseException) -> str:
    """Hydra's multi-line messages (with a docs link) as one line."""
    lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith("See https://")]
    return " ".join(" ".join(lines).split())
