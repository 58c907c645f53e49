"""`aent train`: compose the config, validate it, run the training loop."""
from __future__ import annotations

from typing import List, Optional

from aent_cli.cli.common import load_config, sigterm_interrupts, user_errors


def _shorthand(overrides: List[str]) -> List[str]:
    """`resume=<dir>` and `steps=N` are accepted for trainer.resume / trainer.steps."""
    aliases = {"resume": "trainer.resume", "steps": "trainer.steps"}
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        out.append(f"{aliases[key]}={value}" if sep and key in aliases else item)
    return out


def train(overrides: Optional[List[str]]) -> None:
    overrides = _shorthand(list(overrides or []))
    cfg = load_config(overrides)
    # torch and the engine load after the config is valid: a bad key fails in a second
    from aent_cli.config.preflight import check_train

    with user_errors():
        check_train(cfg)  # writable output folder, tracking store, response length: before any work
    from aent_cli.engine.setup import RunContext
    from aent_cli.engine.trainer import run_training

    with user_errors(), sigterm_interrupts():
        run_training(cfg, RunContext(overrides=overrides))
