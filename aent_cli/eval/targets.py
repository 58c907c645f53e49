"""What `--model` names, resolved to model directories before anything is loaded.

A reference is `tiny` (the embedded model), a model directory (HF `save_pretrained` layout), a training
run's output folder (`checkpoints/step_<N>/`, `final/`), an MLflow training-run id, or a hub id
(`owner/name`, and only when `owner/` is not a local folder: `runs/typo` is a missing path, not a hub id).
However a trained model is named (run folder, checkpoint folder, `final/`, run id), its target carries
the training run's id and checkpoint step, so its eval run is linked to the training run.
For a run, the checkpoint is `final`, `best` (highest val/acc among the steps whose checkpoint exists,
the paper's choice up to using val/acc as the test score) or `all` (every checkpoint, one eval each).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from aent_cli.errors import UserError
from aent_cli.tracking import store, tags as tag

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


@dataclass(frozen=True)
class RunLink:
    """What a training run's output folder says about itself: its MLflow run id (from a checkpoint's
    trainer_state.json, else the store's `aent.run_dir` tag), its final step and prompt template."""
    run_id: Optional[str] = None
    final_step: Optional[int] = None
    template: Optional[str] = None


def _step_of(checkpoint_dir: Path) -> Optional[int]:
    match = _STEP_DIR.match(checkpoint_dir.name)
    return int(match.group(1)) if match else None


def _trainer_state(checkpoint_dir: Path) -> dict:
    try:
        return json.loads((checkpoint_dir / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return {}


def run_link(run_dir: Path, client_factory: Optional[Callable[[], object]] = None) -> RunLink:
    """The training run behind an output folder (see RunLink); fields are None when unknown."""
    final_step, template = None, None
    try:
        from omegaconf import OmegaConf

        saved = OmegaConf.load(run_dir / "config.yaml")
        final_step = int(saved.trainer.steps)
        template = str(saved.model.prompt_template)
    except Exception:  # no (readable) config.yaml: an older or hand-made folder
        pass
    run_id = None
    for _, ckpt in sorted(_checkpoints(run_dir).items(), reverse=True):
        run_id = _trainer_state(ckpt).get("mlflow_run_id") or run_id
        if run_id:
            break
    if run_id is None and client_factory is not None:
        run_id = _run_id_by_dir(run_dir, client_factory)
    return RunLink(run_id, final_step, template)


def _run_id_by_dir(run_dir: Path, client_factory: Callable[[], object]) -> Optional[str]:
    """The training run whose `aent.run_dir` tag is this folder, in any experiment of the store."""
    try:
        client = client_factory()
        runs = client.search_runs(store.experiment_ids(client), f"tags.`{tag.RUN_DIR}` = '{run_dir.resolve()}'",
                                  max_results=1)
    except Exception:  # no store, or an unreadable one: the eval still runs, unlinked
        return None
    return runs[0].info.run_id if runs else None


def _model_dir_target(ref: str, path: Path, client_factory) -> ModelTarget:
    """A model directory; inside a run folder (`<run>/final`, `<run>/checkpoints/step_N`) it is
    linked to the training run and its step."""
    path = path.resolve()
    run_dir = None
    if path.parent.name == "checkpoints":  # <run>/checkpoints/step_N
        run_dir = path.parent.parent
        step = _trainer_state(path).get("step", _step_of(path))
        checkpoint = f"step_{int(step)}" if step is not None else path.name
    elif path.name == "final":  # <run>/final
        run_dir, checkpoint, step = path.parent, "final", None
    if run_dir is None:
        return ModelTarget(ref, path.name, str(path))
    link = run_link(run_dir, client_factory)
    step = link.final_step if checkpoint == "final" else step
    run_id = _trainer_state(path).get("mlflow_run_id") or link.run_id
    return ModelTarget(ref, f"{run_dir.name}:{checkpoint}", str(path), run_id, checkpoint,
                       None if step is None else int(step), link.template)


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
            return [_model_dir_target(ref, path, client_factory)]
        if (path / "final").is_dir() or (path / "checkpoints").is_dir():
            return _run_folder_targets(ref, path.resolve(), choice, client_factory)
        raise ModelRefError(f"--model {ref}: directory has no config.json (not a saved model) and no run checkpoints")
    if RUN_ID.match(ref):
        if client_factory is None:
            raise ModelRefError(f"--model {ref}: looks like an MLflow run id but no tracking store is configured")
        return _resolve_run(ref, choice, client_factory())
    if looks_like_hub_id(ref):
        return [ModelTarget(ref, ref, ref)]
    owner = ref.split("/")[0]
    why = f" ({owner}/ is a local folder, so this is a path, and it does not exist)" if Path(owner).is_dir() else ""
    raise ModelRefError(f"--model {ref}: not 'tiny', an existing model directory, an MLflow run id or a hub id{why}")


def looks_like_hub_id(ref: str) -> bool:
    """`owner/name`, where `owner/` is not a folder here (then `owner/name` is a path that is missing)."""
    return bool(HUB_ID.match(ref)) and not ref.startswith((".", "/", "~")) and not Path(ref.split("/")[0]).is_dir()


def _run_folder_targets(ref: str, run_dir: Path, choice: str, client_factory) -> List[ModelTarget]:
    """A training run's output folder: through its MLflow run when the store has it (val/acc history
    for `best`), else from the folder alone (`best` means final), still linked by its run id."""
    link = run_link(run_dir, client_factory)
    if link.run_id and client_factory is not None:
        try:
            return _resolve_run(link.run_id, choice, client_factory(), run_dir=run_dir, ref=ref)
        except ModelRefError:
            pass  # the store does not have the run (another store, or deleted): use the folder alone
    return _run_dir_targets(ref, run_dir, run_dir.name, "final" if choice == "best" else choice,
                            None, link.final_step, link.run_id, link.template)


def check_hub_model(ref: str) -> None:
    """Fail fast (ModelRefError) when a hub id cannot be loaded: not in the local hub cache and either
    the hub's offline mode is on (HF_HUB_OFFLINE=1) or the hub says the model does not exist or cannot
    be reached within a few seconds (instead of minutes of retries while loading)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(ref, "config.json"), str):
            return
    except Exception:  # not a valid repo id for the cache: let the probe below say why
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise ModelRefError(f"--model {ref}: no such folder, and as a hub id it is not in the local cache "
                            "(HF_HUB_OFFLINE=1)")
    from huggingface_hub import HfApi
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(ref, timeout=10)
    except GatedRepoError:
        return  # exists; loading says whether the token may read it
    except RepositoryNotFoundError:
        raise ModelRefError(f"--model {ref}: no such folder, and no such model on the hub") from None
    except Exception as exc:  # DNS, connection refused, timeout, proxy
        reason = " ".join(str(exc).split())[:80]
        raise ModelRefError(f"--model {ref}: no such folder, and as a hub id it is not cached and the hub "
                            f"cannot be reached ({reason})") from None


def _resolve_run(run_id: str, choice: str, client, run_dir: Optional[Path] = None,
                 ref: Optional[str] = None) -> List[ModelTarget]:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ModelRefError(f"--model {run_id}: unknown MLflow run id in store {client.tracking_uri}") from None
    run_dir = run_dir or run.data.tags.get(tag.RUN_DIR)
    if not run_dir:
        raise ModelRefError(f"--model {run_id}: run has no {tag.RUN_DIR} tag (not an aent training run)")
    if not Path(run_dir).is_dir():
        raise ModelRefError(f"--model {run_id}: its output folder {run_dir} does not exist on this machine")
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val/acc"))
    steps_param = run.data.params.get("trainer.steps", "")
    final_step = int(steps_param) if steps_param.isdigit() else (history[-1][0] if history else None)
    return _run_dir_targets(ref or run_id, Path(run_dir), run.info.run_name or run_id[:8], choice, history, final_step,
                            run_id, run.data.params.get("model.prompt_template"))
