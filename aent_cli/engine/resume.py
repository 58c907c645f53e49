"""What `resume=` continues from, decided before anything expensive runs.

- The checkpoint: the run's latest, verified file by file (checkpoint.verify_checkpoint). A damaged
  one is refused with one line naming the file and, when an older intact checkpoint is kept, the
  exact `resume=` that takes it; trainer.resume_fallback=true takes it and says so.
- The config: the run's saved config. Overrides that only change how far or how the run is driven
  (RESUME_ALLOWED) are applied; any other override that differs from the saved run is refused with
  exit 2, listing each (algo, model, data, seed, batch shape... would silently change the run).
- The MLflow store: the one the run was recorded in (an absolute URI kept in the checkpoint), or
  tracking.uri; a store that does not exist or lacks the run is one line, never a fresh store.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from aent_cli.engine.checkpoint import find_run_dir, step_checkpoints, verify_checkpoint
from aent_cli.errors import UserError
from aent_cli.tracking import store

# Keys an override may change on resume. Everything else must equal the saved run's value.
RESUME_ALLOWED = (
    "trainer.steps", "trainer.stop_after", "trainer.resume", "trainer.resume_fallback",
    "trainer.checkpoint_every", "trainer.keep_checkpoints", "trainer.val_every", "trainer.threads",
    "trainer.output_dir", "tracking.uri", "tracking.log_every", "reward.workers",
)
# eval.* is read by `aent eval`, not by training, except the validation sampling parameters.
_EVAL_USED_IN_TRAINING = ("eval.temperature", "eval.top_p", "eval.top_k", "eval.batch_size")
ALWAYS_FROM_COMMAND = ("trainer.resume", "trainer.stop_after", "trainer.resume_fallback")


def _allowed(key: str) -> bool:
    return key in RESUME_ALLOWED or (key.startswith("eval.") and key not in _EVAL_USED_IN_TRAINING)


def _leaves(node: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(node, dict):
        out: Dict[str, Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out if node or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def _override_prefixes(overrides: Iterable[str]) -> List[str]:
    """Keys (or config groups, e.g. `algo`) the command line names: `algo=grpo` -> `algo`."""
    out = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key and not key.startswith(("hydra", "experiment")):
            out.append(key)
    return out


def _check_world_size(resume: str, ckpt: Path, world_size: int) -> None:
    """A checkpoint written by another number of processes is a launch mistake, said before any file
    check (an unreadable trainer_state.json is left to verify_checkpoint to name)."""
    try:
        written = int(json.loads((ckpt / "trainer_state.json").read_text()).get("world_size", 1))
    except (OSError, ValueError, TypeError, AttributeError):
        return
    if written != world_size:
        raise UserError(f"resume={resume}: the checkpoint was written by {written} process(es), this launch "
                        f"has {world_size}; resume with the same world size")


def choose_checkpoint(resume: str, output_dir: str, fallback: bool, notify: Callable[[str], None],
                      world_size: int = 1) -> Tuple[Path, Path]:
    """(run dir, intact checkpoint) for `resume`; UserError for a damaged one (see module doc) or one
    written by another number of processes."""
    run_dir, ckpt = find_run_dir(resume, output_dir)
    _check_world_size(resume, ckpt, world_size)
    problem = verify_checkpoint(ckpt)
    if problem is None:
        return run_dir, ckpt
    older = None
    for candidate in reversed(step_checkpoints(run_dir)):
        if candidate.name < ckpt.name and verify_checkpoint(candidate) is None:
            older = candidate
            break
    head = f"resume={resume}: checkpoint {ckpt} is damaged: {problem}"
    if older is None:
        raise UserError(f"{head}; no older intact checkpoint is kept: start a new run")
    if fallback:
        notify(f"{head}; resuming from the older intact checkpoint {older} (trainer.resume_fallback=true)")
        return run_dir, older
    raise UserError(f"{head}; the older checkpoint is intact: resume with resume={older} "
                    "(or add trainer.resume_fallback=true)")


def resumed_config(cfg: DictConfig, run_dir: Path, overrides: Optional[Iterable[str]],
                   defaults: DictConfig) -> Tuple[DictConfig, List[str]]:
    """(the saved config of the run with the allowed overrides applied, the keys applied). An
    override is a key the command line names (`overrides`, groups included) or any value that
    differs from `defaults` (the config composed without overrides); ones that would change the
    run raise UserError."""
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        raise UserError(f"resume={cfg.trainer.resume}: {saved_file} is missing")
    try:
        saved = OmegaConf.merge(cfg, OmegaConf.load(saved_file))  # typed: the schema checks the file
    except Exception as exc:  # YAML syntax or schema errors: the file was edited or damaged
        raise UserError(f"resume={cfg.trainer.resume}: {saved_file} is not a valid run config "
                        f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})") from None
    mine = _leaves(OmegaConf.to_container(cfg, resolve=True))
    theirs = _leaves(OmegaConf.to_container(saved, resolve=True))
    base = _leaves(OmegaConf.to_container(defaults, resolve=True))
    named = _override_prefixes(overrides or [])
    refused, applied = [], []
    for key, value in mine.items():
        touched = value != base.get(key) or any(key == p or key.startswith(p + ".") for p in named)
        if key in ALWAYS_FROM_COMMAND or (touched and _allowed(key)):
            OmegaConf.update(saved, key, OmegaConf.select(cfg, key), merge=False)
            applied += [key] if touched else []
        elif touched and value != theirs.get(key):
            refused.append(f"{key}={value} (run: {theirs.get(key)})")
    if refused:
        raise UserError(f"resume={cfg.trainer.resume}: these overrides would change what the run means and "
                        f"cannot apply on resume: {_summary(refused)}. Allowed on resume: "
                        f"{', '.join(RESUME_ALLOWED)} and eval settings not used in training; for the rest "
                        "start a new run")
    return saved, applied


def _summary(refused: List[str], per_group: int = 3) -> str:
    """Up to `per_group` entries of each top-level section (algo, model, ...), then how many more."""
    groups: Dict[str, List[str]] = {}
    for item in refused:
        groups.setdefault(item.split(".", 1)[0], []).append(item)
    parts = []
    for name, items in groups.items():
        more = f" (+{len(items) - per_group} more {name}.*)" if len(items) > per_group else ""
        parts.append(", ".join(items[:per_group]) + more)
    return "; ".join(parts)


def check_store(uri: str, run_id: str, resume: str) -> None:
    """UserError unless the MLflow store at `uri` exists and holds run `run_id` (no store is made)."""
    from mlflow.exceptions import MlflowException

    hint = "pass tracking.uri=<the store the run was recorded in>"
    if not store.store_exists(uri):
        raise UserError(f"resume={resume}: the MLflow store {uri} does not exist (the run {run_id} was "
                        f"recorded elsewhere?); {hint}")
    try:
        store.client(uri).get_run(run_id)
    except MlflowException:
        raise UserError(f"resume={resume}: the MLflow store {uri} has no run {run_id}; {hint}") from None
