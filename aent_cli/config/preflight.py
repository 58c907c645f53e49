"""Cheap checks `aent train`, `aent eval` and `aent report` make before any expensive work: the folders
they will write into can be written, the MLflow tracking URI is one MLflow can open, and the training
response length fits the model's positions (engine/setup.py calls that one). Each failure is a one-line ConfigError naming the key
(exit 2); nothing is created.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from aent_cli.errors import ConfigError
from aent_cli.tracking.store import tracking_uri

# The tracking-store schemes MLflow 3 ships (mlflow.tracking._tracking_service.utils' registry); a
# database scheme may name its driver (`postgresql+psycopg2://`). No scheme = a local folder (file store).
TRACKING_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks",
                    "databricks-uc", "uc")
_SQLITE = "sqlite:///"


def folder_problem(path: Path) -> str:
    """Why `path` cannot be (made) a folder this process writes into; "" when it can. Probes the nearest
    existing folder with an unnamed temporary file (os.access says yes to root on a read-only mount)."""
    path = path.expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError:
        return f"{path} is not writable" if existing == path else f"cannot create {path}: {existing} is not writable"
    return ""


def check_folder(key: str, path) -> None:
    """ConfigError `key=path: why` unless `path` is, or can be created as, a writable folder."""
    if path is None or not str(path).strip():
        raise ConfigError(f"{key}: empty; give a folder (e.g. {key}=runs)")
    problem = folder_problem(Path(str(path)))
    if problem:
        raise ConfigError(f"{key}={path}: {problem}")


def check_tracking_uri(uri: str, key: str = "tracking.uri") -> None:
    """A scheme MLflow has a store for, and for a local store (SQLite file, file-store folder) a place
    it can write. Servers and databases are not contacted here."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ("file" if uri.startswith("file:") else "")
    if scheme and scheme not in TRACKING_SCHEMES:
        raise ConfigError(f"{key}={uri}: unknown scheme '{scheme}://' (MLflow's: {', '.join(TRACKING_SCHEMES)}; "
                          "or a local folder)")
    if scheme == "sqlite":
        if not uri.startswith(_SQLITE):
            raise ConfigError(f"{key}={uri}: a SQLite store is written sqlite:///relative.db or sqlite:////abs/path.db")
        database = Path(uri[len(_SQLITE):].split("?", 1)[0])
        if str(database) == ":memory:":
            return
        if database.is_dir():
            raise ConfigError(f"{key}={uri}: {database} is a folder, not a database file")
        if database.exists() and not os.access(database, os.R_OK | os.W_OK):
            raise ConfigError(f"{key}={uri}: {database} is not writable")
        check_folder(key, database.parent)  # a new database is created there; SQLite's journal goes beside it
    elif scheme == "file":
        check_folder(key, uri[len("file://"):] if uri.startswith("file://") else uri[len("file:"):])
    elif not scheme:
        check_folder(key, uri)
    elif scheme in ("http", "https"):
        _check_server(uri, key)


def _check_server(uri: str, key: str, timeout_s: float = 5.0) -> None:
    """A tracking server that accepts a connection within `timeout_s` (MLflow's client would retry for
    minutes, then fail with a traceback after the run folder exists). Does not log in or send a request."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(f"{key}={uri}: no tracking server answers at {parts.hostname}:{port} "
                          f"({exc.strerror or exc.__class__.__name__})") from None


def model_positions(model_cfg: DictConfig) -> Optional[int]:
    """The model's maximum positions when known without loading it: the embedded model's recipe, or
    a local directory's config.json; None for a hub id (not read here) or a config without the field."""
    path = str(model_cfg.path)
    if path == "tiny":
        from aent_cli.models.tiny import ARCH

        return int(ARCH["max_position_embeddings"])
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None  # loading the model says what is wrong with it
    data = data.get("text_config", data)  # multimodal configs nest the language model's
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(data.get(name), int):
            return data[name]
    return None


def check_response_length(key: str, max_new_tokens: int, model_cfg: DictConfig) -> None:
    """A response of `max_new_tokens` plus at least one prompt token must fit the model's positions."""
    positions = model_positions(model_cfg)
    if positions is not None and max_new_tokens >= positions:
        raise ConfigError(f"{key}={max_new_tokens}: the model ({model_cfg.path}) has {positions} positions for the "
                          f"prompt and the response together; use at most {positions - 1} (less the prompt)")


def check_store(cfg: DictConfig) -> None:
    """check_tracking_uri on the store a command will open: tracking.uri, else $MLFLOW_TRACKING_URI,
    else the default SQLite file; the message names where the URI came from."""
    from_env = not cfg.tracking.uri and os.environ.get("MLFLOW_TRACKING_URI")
    check_tracking_uri(tracking_uri(cfg.tracking.uri), "MLFLOW_TRACKING_URI" if from_env else "tracking.uri")


def check_eval(cfg: DictConfig) -> None:
    """`aent eval`'s preflight: the report folder and the tracking store."""
    check_folder("eval.output_dir", cfg.eval.output_dir)
    check_store(cfg)


def check_train(cfg: DictConfig) -> None:
    """`aent train`'s preflight: output folder and tracking store. (The response length is checked by
    engine/setup.py, after the optional backends and on a resumed run's own config, before the model loads.)"""
    check_folder("trainer.output_dir", cfg.trainer.output_dir)
    if cfg.tracking.uri or not cfg.trainer.resume:  # a resumed run reopens the store it was recorded in
        check_store(cfg)
