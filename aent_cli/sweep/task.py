"""One sweep job, as Hydra's launchers call it: train with the job's composed config as a nested MLflow
child run of the sweep's parent, and make sure a job that fails leaves a FAILED child run that says why.

`SweepTask` is a plain picklable object: the joblib launcher (loky processes) and a cluster launcher
(submitit) ship it to the process that runs the job.
"""
from __future__ import annotations

import copy
import os
import re
import socket
import traceback
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from omegaconf import DictConfig, open_dict, read_write

from aent_cli.config import validate
from aent_cli.tracking import store, tags as tag

_TAG_KEY = re.compile(r"[^/\w.\- :]")  # characters MLflow refuses in a tag key


def job_tags(index: int, label: str, overrides: List[str]) -> Dict[str, str]:
    """The job's identity on its child run: index, label, and one `aent.override.<key>` tag per override."""
    tags = {tag.SWEEP_JOB: str(index), tag.SWEEP_LABEL: label[:5000], tag.SWEEP_OVERRIDES: " ".join(overrides)[:5000],
            tag.SWEEP_PROCESS: f"{socket.gethostname()}:{os.getpid()}"}
    for item in overrides:
        key, _, value = item.partition("=")
        tags[tag.OVERRIDE_PREFIX + _TAG_KEY.sub('_', key)] = value[:5000]
    return tags


def find_child(client, parent_run_id: str, index: int):
    """The child run of job `index`, or None."""
    parent = client.get_run(parent_run_id)
    found = client.search_runs([parent.info.experiment_id],
                               f"tags.`{tag.PARENT_RUN_ID}` = '{parent_run_id}' and tags.`{tag.SWEEP_JOB}` = '{index}'",
                               max_results=5)
    return found[0] if found else None


def record_failure(client, parent_run_id: str, index: int, label: str, overrides: List[str],
                   error: BaseException, status: str = "FAILED", details: Optional[str] = None) -> str:
    """Attach the error to job `index`'s child run, creating a FAILED (or KILLED) run when the job died
    before training created one (bad data path, model load error). Returns the child run id."""
    text = f"{type(error).__name__}: {error}"
    child = find_child(client, parent_run_id, index)
    if child is None:
        parent = client.get_run(parent_run_id)
        tags = {**job_tags(index, label, overrides), tag.PARENT_RUN_ID: parent_run_id, tag.KIND: tag.KIND_TRAIN,
                tag.ERROR: text[:5000]}
        run_name = f"{parent.info.run_name}-j{index}"
        run_id = client.create_run(parent.info.experiment_id, run_name=run_name, tags=tags).info.run_id
    else:
        run_id = child.info.run_id
        store.set_tags(client, run_id, {tag.ERROR: text[:5000]})
    client.log_text(run_id, details or text, "error.txt")
    if client.get_run(run_id).info.status in ("RUNNING", "SCHEDULED"):
        client.set_terminated(run_id, status=status)
    return run_id


@dataclass
class SweepTask:
    parent_run_id: str
    tracking_uri: str  # absolute: the job may run in another working directory or on another machine
    run_prefix: str
    labels: Dict[int, str] = field(default_factory=dict)
    quiet: bool = False
    threads: int = 0  # torch threads per job when the job's config leaves trainer.threads at 0

    def __call__(self, cfg: DictConfig) -> Dict[str, object]:
        from hydra.core.hydra_config import HydraConfig

        # torch and the engine load in the job, not when the sweep is planned
        from aent_cli.engine.setup import RunContext
        from aent_cli.engine.trainer import run_training

        hydra_cfg = HydraConfig.get()
        index = int(hydra_cfg.job.num)
        overrides = list(hydra_cfg.overrides.task)
        label = self.labels.get(index, " ".join(overrides))
        cfg = copy.deepcopy(cfg)
        with read_write(cfg), open_dict(cfg):
            cfg.tracking.uri = self.tracking_uri
            cfg.trainer.run_name = f"{cfg.trainer.run_name or self.run_prefix}-j{index}"
            if self.threads and not cfg.trainer.threads:
                cfg.trainer.threads = self.threads
        try:
            validate(cfg)
            result = run_training(cfg, RunContext(self.parent_run_id, job_tags(index, label, overrides), self.quiet))
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            try:
                record_failure(store.client(self.tracking_uri), self.parent_run_id, index, label, overrides, exc,
                               status, traceback.format_exc())
            except Exception:  # noqa: BLE001 - the job's own error matters more than the bookkeeping's
                pass
            raise
        return {"run_id": result.run_id, "run_dir": str(result.run_dir), "pid": os.getpid(),
                "val": {int(k): float(v) for k, v in result.val.items()}}
