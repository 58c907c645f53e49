"""Compose a run's config with Hydra: `conf/` groups + structured schema + experiments + overrides."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from aent_cli.config.schema import AentConfig
from aent_cli.errors import ConfigError


def project_path(name: str) -> Path:
    """Top-level folder of the project (`conf`, `experiments`, `sweeps`).

    `AENT_HOME` points elsewhere; otherwise the checkout this package lives in (editable install).
    """
    root = Path(os.environ.get("AENT_HOME", Path(__file__).resolve().parents[2]))
    path = root / name
    if not path.is_dir():
        raise ConfigError(f"cannot find the '{name}' folder at {path}: set AENT_HOME to the aent checkout")
    return path


def register_schema_and_experiments() -> None:
    cs = ConfigStore.instance()
    cs.store(name="aent_schema", node=AentConfig)
    # Presets in experiments/ are global-package overlays selected with `+experiment=<name>`.
    for path in sorted(project_path("experiments").glob("*.yaml")):
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")


def compose_config(overrides: Optional[Iterable[str]] = None, config_name: str = "config") -> DictConfig:
    """The composed, typed config for these Hydra overrides; raises ConfigError on a bad override."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_schema_and_experiments()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(project_path("conf")), version_base=None):
            return compose(config_name=config_name, overrides=list(overrides or []))
    except (HydraException, OmegaConfBaseException) as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(f"bad config override: {message}") from None
