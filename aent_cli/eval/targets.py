"""What `--model` names, resolved to model directories before anything is loaded.

A reference is `tiny` (the embedded model), a model directory (HF `save_pretrained` layout), a training
run's output folder (`checkpoints/step_<N>/`, `final/`), an MLflow training-run id, or a hub id.
For a run, the checkpoint is `final`, `best` (highest val/acc among the steps whose checkpoint exists,
the paper's choice up to using val/acc as the test score) or `all` (every checkpoint, one eval each).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from aent_cli.errors import UserError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CHECKPOINT_CHOICES = ("best", "final", "all")
_STEP_DIR = re.compile(r"^step_(\d+)$")


class ModelRefError(UserError):
    """A `--model` value that names no model, run or checkpoint."""


@dataclass(frozen=True)
class ModelTarget:
    ref: str  # what the user passed
    label: str  # row name in tables, MLflow run name suffix
    path: str  # given to load_policy as model.path: "tiny", a directory or a hub id
    source_run_id: Optional[str] = None
    checkpoint: str = ""  # "" (plain model), "final" or "step_<N>"
    step: Optional[int] = None
    prompt_template: Optional[str] = None  # a training run's template (its config value), used for its prompts


def _checkpoints(run_dir: Path) -> dict:
    """{step: dir} of the step_<N> checkpoints in a run's output folder."""
    out = {}
    folder = run_dir / "checkpoints"
    if folder.is_dir():
        for child in folder.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and child.is_dir():
                out[int(match.group(1))] = child
    return out


def _saved_template(run_dir: Path) -> Optional[str]:
    """The prompt template in a run folder's config.yaml, if it has one."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.select(OmegaConf.load(saved), "model.prompt_template")
    except Exception:  # noqa: BLE001 - an unreadable config leaves the template to the eval config
        return None
    return str(value) if value else None


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def _run_dir_targets(ref: str, run_dir: Path, label: str, choice: str, val_history: Optional[list],
                     final_step: Optional[int], run_id: Optional[str], template: Optional[str]) -> List[ModelTarget]:
    steps = _checkpoints(run_dir)
    final = run_dir / "final"
    if template is None:
        template = _saved_template(run_dir)

    def target(checkpoint: str, path: Path, step: Optional[int]) -> ModelTarget:
        return ModelTarget(ref, f"{label}:{checkpoint}", str(path), run_id, checkpoint, step, template)

    final_target = [target("final", final, final_step)] if final.is_dir() else []
    step_targets = {step: target(f"step_{step}", path, step) for step, path in sorted(steps.items())}
    if not final_target and not step_targets:
        raise ModelRefError(f"--model {ref}: run folder {run_dir} has no final/ or checkpoints/step_<N>/ model")
    if choice == "final":
        return final_target or [step_targets[max(step_targets)]]
    if choice == "all":
        return [t for step, t in step_targets.items() if step != final_step or not final_target] + final_target
    # best: the highest val/acc among steps that still have a model on disk (later step on ties)
    available = dict(step_targets)
    if final_target and final_step is not None:
        available[final_step] = final_target[0]
    scored = [(value, step) for step, value in (val_history or []) if int(step) in available]
    if not scored:
        return final_target or [step_targets[max(step_targets)]]
    return [available[int(max(scored)[1])]]


def resolve_model(ref: str, choice: str = "best", client_factory: Optional[Callable[[], object]] = None) -> List[ModelTarget]:
    """The model(s) one `--model` value stands for; raises ModelRefError without loading anything."""
    if choice not in CHECKPOINT_CHOICES:
        raise ModelRefError(f"--checkpoint {choice!r}: choose one of {', '.join(CHECKPOINT_CHOICES)}")
    if ref == "tiny":
        return [ModelTarget(ref, "tiny", "tiny")]
    path = Path(ref).expanduser()
    if path.is_dir():
        if _is_model_dir(path):
            path = path.resolve()
            if path.parent.name == "checkpoints":  # <run>/checkpoints/step_N
                label = f"{path.parent.parent.name}:{path.name}"
            elif path.name == "final":  # <run>/final
                label = f"{path.parent.name}:final"
            else:
                label = path.name
            return [ModelTarget(ref, label, str(path))]
        if (path / "final").is_dir() or (path / "checkpoints").is_dir():
            # A run folder without its MLflow run: no val/acc history, so `best` means final.
            return _run_dir_targets(ref, path.resolve(), path.name, "final" if choice == "best" else choice,
                                    None, None, None, None)
        raise ModelRefError(f"--model {ref}: directory has no config.json (not a saved model) and no run checkpoints")
    if RUN_ID.match(ref):
        if client_factory is None:
            raise ModelRefError(f"--model {ref}: looks like an MLflow run id but no tracking store is configured")
        return _resolve_run(ref, choice, client_factory())
    if HUB_ID.match(ref) and not ref.startswith((".", "/", "~")):
        return [ModelTarget(ref, ref, ref)]
    raise ModelRefError(f"--model {ref}: not 'tiny', an existing model directory, an MLflow run id or a hub id")


def _resolve_run(run_id: str, choice: str, client) -> List[ModelTarget]:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ModelRefError(f"--model {run_id}: unknown MLflow run id in store {client.tracking_uri}") from None
    run_dir = run.data.tags.get("aent.run_dir")
    if not run_dir:
        raise ModelRefError(f"--model {run_id}: run has no aent.run_dir tag (not an aent training run)")
    if not Path(run_dir).is_dir():
        raise ModelRefError(f"--model {run_id}: its output folder {run_dir} does not exist on this machine")
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val/acc"))
    steps_param = run.data.params.get("trainer.steps", "")
    final_step = int(steps_param) if steps_param.isdigit() else (history[-1][0] if history else None)
    return _run_dir_targets(run_id, Path(run_dir), run.info.run_name or run_id[:8], choice, history, final_step,
                            run_id, run.data.params.get("model.prompt_template"))
