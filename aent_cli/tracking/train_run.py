"""The MLflow run of one training run: params, buffered per-step metrics, artifacts, status."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from omegaconf import DictConfig

from aent_cli.tracking import store


class TrainTracker:
    def __init__(self, cfg: DictConfig, run_dir: Path, run_id: Optional[str] = None,
                 parent_run_id: Optional[str] = None, tags: Optional[Dict[str, str]] = None) -> None:
        self.client = store.client(cfg.tracking.uri)
        self.flush_every = max(1, int(cfg.tracking.log_every))
        self._pending: List[Tuple[Dict[str, float], int]] = []
        if run_id is not None:  # resume: continue the same run
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        all_tags = {"aent.kind": "train", "aent.run_dir": str(Path(run_dir).resolve()),
                    "aent.algo": cfg.algo.name, **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        exp = store.experiment_id(self.client, cfg.tracking.experiment)
        run = self.client.create_run(exp, run_name=Path(run_dir).name, tags=all_tags)
        self.run_id = run.info.run_id
        store.log_params(self.client, self.run_id, store.flatten(cfg))
        self.client.log_artifact(self.run_id, str(Path(run_dir) / "config.yaml"))

    def log(self, metrics: Dict[str, float], step: int) -> None:
        self._pending.append((dict(metrics), step))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        for metrics, step in self._pending:
            store.log_metrics(self.client, self.run_id, metrics, step)
        self._pending.clear()

    def end(self, status: str) -> None:
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=status)

    def finish(self, result) -> None:
        final = str(Path(result.final_model_dir).resolve())
        store.set_tags(self.client, self.run_id, {"aent.final_model_dir": final})
        self.client.log_text(self.run_id, final + "\n", "final_model_dir.txt")
        self.end("FINISHED")
