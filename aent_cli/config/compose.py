"""Compose a run's config with Hydra: `conf/` groups + structured schema + experiments + overrides.

Overrides are checked against the schema before Hydra sees them, so a mistake gets one line that says
what is wrong: `unknown key trainer.stpes: did you mean trainer.steps?` (also when written `+trainer.stpes=`,
which Hydra would otherwise add silently), `trainer.steps=abc: expected an integer`, `unknown algo
'aentt': did you mean aent?`. Hydra's own message (with its config search path) is kept on the error
as `detail`, printed by `aent --verbose`.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Iterable, List, Optional

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from aent_cli.config import keys
from aent_cli.config.schema import AentConfig
from aent_cli.errors import ConfigError

MAX_MESSAGE = 200  # characters in a one-line config error
_SEARCH_PATH = "Config search path"


def project_path(name: str) -> Path:
    """Top-level folder of the project (`conf`, `experiments`, `sweeps`).

    `AENT_HOME` points elsewhere; otherwise the checkout this package lives in (editable install).
    """
    root = Path(os.environ.get("AENT_HOME", Path(__file__).resolve().parents[2]))
    path = root / name
    if not path.is_dir():
        raise ConfigError(f"cannot find the '{name}' folder at {path}: set AENT_HOME to the aent checkout")
    return path


_registered: Optional[tuple] = None  # the preset files (path, mtime) last put in the ConfigStore


def register_schema_and_experiments() -> None:
    """Put the schema and the presets of experiments/ in Hydra's ConfigStore; again only when a preset
    file was added, removed or edited since (the schema conversion costs ~50 ms per compose)."""
    global _registered
    presets = sorted(project_path("experiments").glob("*.yaml"))
    seen = tuple((str(path), path.stat().st_mtime_ns) for path in presets)
    if seen == _registered:
        return
    cs = ConfigStore.instance()
    cs.store(name="aent_schema", node=AentConfig)
    # Presets in experiments/ are global-package overlays selected with `+experiment=<name>`.
    for path in presets:
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")
    _registered = seen


def group_options() -> dict:
    """{group: [option names]}: the folders of conf/ and `experiment` (the presets in experiments/)."""
    conf = project_path("conf")
    out = {p.name: sorted(f.stem for f in p.glob("*.yaml")) for p in sorted(conf.iterdir()) if p.is_dir()}
    out["experiment"] = sorted(f.stem for f in project_path("experiments").glob("*.yaml"))
    return out


def config_error(message: str, detail: Optional[str] = None) -> ConfigError:
    """A ConfigError whose message is one line of at most MAX_MESSAGE characters; the full text in `detail`."""
    line = " ".join(message.split())
    if len(line) > MAX_MESSAGE:
        line = line[:MAX_MESSAGE - 3].rstrip() + "..."
    error = ConfigError(line)
    error.detail = detail if detail is not None else (message if message != line else None)
    return error


def _parse(overrides: List[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except HydraException as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise config_error(f"cannot parse override {text!r}: {first}", str(exc)) from None
    return parsed


def _check_group(group: str, option, text: str, options: dict) -> None:
    if isinstance(option, (list, tuple)) and group != "experiment":
        # Hydra would merge every listed option into one section (algo=[aent,grpo] runs a hybrid).
        raise config_error(f"{text}: {group} takes one option, not a list (choices: {', '.join(options[group])}); "
                           "to run several, use aent sweep or aent ablate")
    if isinstance(option, str) and option in options[group]:
        return
    # not a name at all (algo=3, model=true, algo=null) is refused here too: Hydra would raise a ValueError
    close = difflib.get_close_matches(option, options[group], n=1, cutoff=0.5) if isinstance(option, str) else []
    hint = f"did you mean {close[0]}? " if close else ""
    raise config_error(f"unknown {group} {option!r} in {text}: {hint}(choices: {', '.join(options[group])})")


def check_overrides(overrides: List[str]) -> None:
    """Refuse, before composing, overrides whose key the schema does not have (with or without `+`),
    unknown group options, and values of the wrong type; each as a one-line ConfigError."""
    options = group_options()
    probe = None  # one schema instance that every typed value is tried on (building one costs ~25 ms)
    for override, text in zip(_parse(overrides), overrides):
        key = override.key_or_group
        if override.package is None and key in options and "." not in key:
            if not override.is_delete():
                _check_group(key, override.value(), text, options)
            continue
        state, tp = keys.lookup(key)
        if state == "unknown":
            raise config_error(keys.unknown_key_message(key))
        if state == "known" and not override.is_delete() and not override.is_sweep_override():
            value = override.value()
            if tp is not None and value is not None:
                probe = probe if probe is not None else OmegaConf.structured(AentConfig)
                _check_type(probe, key, tp, value, text)


def _check_type(probe: DictConfig, key: str, tp, value, text: str) -> None:
    """`trainer.steps=abc` -> `trainer.steps=abc: expected an integer`, by letting OmegaConf convert
    the value into a node of the schema's type on `probe` (a structured AentConfig; each key's node
    converts on its own, so one probe serves every override)."""
    from omegaconf.errors import OmegaConfBaseException

    section, _, leaf = key.rpartition(".")
    try:
        node = OmegaConf.select(probe, section) if section else probe
        OmegaConf.update(node, leaf, value, merge=False) if section else setattr(probe, leaf, value)
    except OmegaConfBaseException:
        raise config_error(f"{text}: expected {keys.type_name(tp)}") from None


def _hydra_message(exc: BaseException) -> str:
    """Hydra's message without the config search path (that part only under --verbose)."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {str(cause).splitlines()[0]}"
    return " ".join(text.split(_SEARCH_PATH)[0].split())


def compose_config(overrides: Optional[Iterable[str]] = None, config_name: str = "config") -> DictConfig:
    """The composed, typed config for these Hydra overrides; raises a one-line ConfigError on a bad
    override (unknown key, unknown group option, wrong type) or a preset with keys the schema lacks."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides or [])
    register_schema_and_experiments()
    check_overrides(overrides)
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(project_path("conf")), version_base=None):
            cfg = compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise config_error(f"bad config override: {_hydra_message(exc)}", str(exc)) from None
    extra = keys.extra_keys(cfg)
    if extra:  # a preset (experiments/*.yaml) or conf file with a key the schema does not declare
        raise config_error(keys.unknown_key_message(extra[0]) + " (set in a config file or preset)")
    return cfg
