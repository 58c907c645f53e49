"""Where runs are recorded: MLflow, through an explicit client (no global active-run state), so
training, evaluation and sweeps can hold several runs at once and resume a run by id."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from aent_cli.tracking.tags import EXPERIMENT_KIND as EXPERIMENT_KIND_TAG

DEFAULT_URI = "sqlite:///mlflow.db"
_SQLITE = "sqlite:///"
LOCK_TIMEOUT_S = 600.0  # a schema migration of a large store can take minutes


def tracking_uri(uri: Optional[str] = None) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else the local SQLite store in the working directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a `sqlite:///` URI (relative to the working directory), else None."""
    if not uri.startswith(_SQLITE):
        return None
    return Path(uri[len(_SQLITE):].split("?", 1)[0])


def absolute_uri(uri: Optional[str] = None) -> str:
    """tracking_uri(uri) with a local store's path made absolute (SQLite file or file-store folder), so
    sweep jobs and resumed runs in other working directories use the same store."""
    resolved = tracking_uri(uri)
    if resolved.startswith(_SQLITE) and not resolved.startswith(_SQLITE + "/"):
        return _SQLITE + str(Path(resolved[len(_SQLITE):]).expanduser().resolve())
    if "://" not in resolved and not resolved.startswith("file:"):
        return str(Path(resolved).expanduser().resolve())
    return resolved


def store_exists(uri: Optional[str] = None) -> bool:
    """False only for a SQLite store whose file does not exist (opening it would create an empty one)."""
    path = sqlite_path(tracking_uri(uri))
    return path is None or str(path) == ":memory:" or path.is_file()


def _creation_lock(uri: str):
    """A file lock next to a SQLite store: MLflow creates and migrates the schema when a client first
    opens it, and two processes doing that at once break it ("table _alembic_tmp_experiments already
    exists"), leaving it half-migrated. Other stores (servers, databases) handle their own."""
    path = sqlite_path(uri)
    if path is None or str(path) == ":memory:":
        return contextlib.nullcontext()
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S)


# MLflow 3 opens an experiment on its GenAI overview unless the experiment says it trains models.
EXPERIMENT_KIND = {EXPERIMENT_KIND_TAG: "custom_model_development"}


def client(uri: Optional[str] = None, artifact_location: Optional[str] = None):
    """An MlflowClient; the store is opened (created / migrated when new) under _creation_lock, so N
    runs starting at once on a new store all succeed. `artifact_location` (tracking.artifact_location) is
    where experiments that aent creates keep their artifacts (default: `artifact_root` of the store)."""
    from mlflow.tracking import MlflowClient

    resolved = tracking_uri(uri)
    with _creation_lock(resolved):
        out = MlflowClient(tracking_uri=resolved)
    out.aent_artifact_location = artifact_location
    return out


def artifact_root(uri: str) -> Optional[str]:
    """Where a new experiment's artifacts go, beside the store `uri` names: `<folder of the .db>/mlruns`
    for SQLite (not the working directory's ./mlruns, MLflow's default); None where MLflow's own
    choice is already beside the store (file stores, tracking servers, other databases)."""
    database = sqlite_path(uri)
    if database is not None and str(database) not in ("", ".", ":memory:"):
        return str(database.expanduser().resolve().parent / "mlruns")
    return None


def experiment_id(mlflow_client, name: str) -> str:
    """The experiment's id, created when missing (artifacts beside the store, marked as a model-training
    experiment so the MLflow UI opens it on its runs)."""
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        if not found.tags.get(EXPERIMENT_KIND_TAG):  # made by an older aent or by hand
            mlflow_client.set_experiment_tag(found.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
        return found.experiment_id
    location = getattr(mlflow_client, "aent_artifact_location", None) or artifact_root(mlflow_client.tracking_uri)
    try:
        return mlflow_client.create_experiment(name, artifact_location=location, tags=dict(EXPERIMENT_KIND))
    except Exception:  # another process created it between our two calls
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


PAGE_SIZE = 1000  # MLflow's largest page for run and experiment searches


def all_pages(search: Callable[..., Any], *args: Any, **kwargs: Any) -> List[Any]:
    """Every item of an MLflow search that pages its results (`search_runs`, `search_experiments`):
    `search(*args, max_results=PAGE_SIZE, page_token=..., **kwargs)` is called until a page comes back
    without a next-page token. The one paging loop of the package."""
    out: List[Any] = []
    token = None
    while True:
        page = search(*args, max_results=PAGE_SIZE, page_token=token, **kwargs)
        out.extend(page)
        token = page.token
        if not token:
            return out


def search_runs(mlflow_client, experiment_ids: Sequence[str], filter_string: str,
                order_by: Optional[Sequence[str]] = None) -> List[Any]:
    """All runs of these experiments that match `filter_string` (MLflow search syntax), every page."""
    return all_pages(mlflow_client.search_runs, list(experiment_ids), filter_string,
                     order_by=list(order_by) if order_by else None)


def experiment_ids(mlflow_client) -> List[str]:
    """The ids of every (active) experiment in the store, every page."""
    return [e.experiment_id for e in all_pages(mlflow_client.search_experiments)]


def flatten(cfg: DictConfig | Mapping[str, Any], prefix: str = "") -> Dict[str, str]:
    """Resolved config as flat `a.b.c -> str` params (MLflow caps a param value at 6000 chars)."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: Dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


def log_params(mlflow_client, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow's batch limit on params
        mlflow_client.log_batch(run_id, params=items[start:start + 100])


def log_metrics(mlflow_client, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """One batched round trip for a step's metrics."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
    for start in range(0, len(items), 1000):
        mlflow_client.log_batch(run_id, metrics=items[start:start + 1000])


def set_tags(mlflow_client, run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    mlflow_client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def metric_history(mlflow_client, run_id: str, keys: Iterable[str]) -> Dict[str, list]:
    """{key: [(step, value), ...]} sorted by step, for figures and reports."""
    out = {}
    for key in keys:
        hist = mlflow_client.get_metric_history(run_id, key)
        out[key] = sorted((m.step, m.value) for m in hist)
    return out
