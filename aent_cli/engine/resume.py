"""What `resume=` continues from, decided before anything expensive runs.

- The checkpoint: the run's latest, verified file by file (checkpoint.verify_checkpoint). A damaged
  one, or a `checkpoints/latest` pointer that is missing or names no checkpoint, is refused with one
  line naming the file and, when an intact checkpoint is kept, a second line with the exact `resume=`
  that takes it; trainer.resume_fallback=true takes it and says so. A trainer_state.json or run
  config.yaml edited by hand (their SHA-256 recorded at save) is refused: changes are overrides.
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

from aent_cli.engine.checkpoint import (find_run_dir, pointer_problem, step_checkpoints, verify_checkpoint,
                                        verify_run_config)
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


def _newest_intact(run_dir: Path, below: Optional[str] = None) -> Optional[Path]:
    """The newest checkpoint of the run (older than `below`, a step folder name) that verifies."""
    for candidate in reversed(step_checkpoints(run_dir)):
        if (below is None or candidate.name < below) and verify_checkpoint(candidate) is None:
            return candidate
    return None


def _names_a_checkpoint(resume: str) -> bool:
    return Path(resume).expanduser().parent.name == "checkpoints"


def _follow_pointer(resume: str, run_dir: Path, ckpt: Path, fallback: bool,
                    notify: Callable[[str], None]) -> Path:
    """The checkpoint `checkpoints/latest` names, when it is sound. A pointer that is missing or names
    no checkpoint is refused (the newest intact checkpoint's exact `resume=` on the second line) or,
    with trainer.resume_fallback=true, replaced by that checkpoint with a printed line."""
    problem = pointer_problem(run_dir)
    if problem is None:
        return ckpt
    head = f"resume={resume}: {problem}"
    newest = _newest_intact(run_dir)
    if newest is None:
        raise UserError(f"{head}; no intact checkpoint is kept: start a new run")
    if fallback:
        notify(f"{head}; resuming from the newest intact checkpoint {newest.name} (trainer.resume_fallback=true)")
        return newest
    raise UserError(f"{head}\n  the newest intact checkpoint is {newest.name}: resume with resume={newest} "
                    "(or add trainer.resume_fallback=true)")


def choose_checkpoint(resume: str, output_dir: str, fallback: bool, notify: Callable[[str], None],
                      world_size: int = 1) -> Tuple[Path, Path]:
    """(run dir, intact checkpoint) for `resume`; UserError for a damaged one or a broken `latest`
    pointer (see module doc), one written by another number of processes, or a run config.yaml edited
    after the checkpoint was written (changes are passed as overrides on resume instead)."""
    run_dir, ckpt = find_run_dir(resume, output_dir)
    if not _names_a_checkpoint(resume):
        ckpt = _follow_pointer(resume, run_dir, ckpt, fallback, notify)
    _check_world_size(resume, ckpt, world_size)
    problem = verify_checkpoint(ckpt)
    if problem is not None:
        older = _newest_intact(run_dir, below=ckpt.name)
        head = f"resume={resume}: checkpoint {ckpt.name} is damaged: {problem}"
        if older is None:
            raise UserError(f"{head}; no older intact checkpoint is kept: start a new run")
        if not fallback:
            raise UserError(f"{head}\n  the older checkpoint {older.name} is intact: resume with resume={older} "
                            "(or add trainer.resume_fallback=true)")
        notify(f"{head}; resuming from the older intact checkpoint {older} (trainer.resume_fallback=true)")
        ckpt = older
    edited = verify_run_config(ckpt)
    if edited is not None:
        raise UserError(f"resume={resume}: {edited}\n  a resumed run takes changes as overrides (e.g. "
                        f"resume={resume} trainer.steps=N), not as edits of the saved files: restore the file, "
                        "or start a new run with the edited config")
    return run_dir, ckpt


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
        raise UserError(f"resume={cfg.trainer.resume}: {saved_file} is not a valid run config\n  "
                        f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:160]}") from None
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
        raise UserError(f"resume={cfg.trainer.resume}: {len(refused)} override(s) would change what the run "
                        f"means and cannot apply on resume (start a new run for them)\n  {_summary(refused)}\n"
                        f"  allowed on resume: {', '.join(RESUME_ALLOWED)} and eval settings not used in training")
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
        raise UserError(f"resume={resume}: the MLflow store {uri} does not exist\n  the run {run_id} was "
                        f"recorded elsewhere? {hint}")
    try:
        store.client(uri).get_run(run_id)
    except MlflowException:
        raise UserError(f"resume={resume}: the MLflow store {uri} has no run {run_id}\n  {hint}") from None
