"""The MLflow run of one training run: params, buffered per-step metrics, artifacts, status."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from omegaconf import DictConfig

from aent_cli.tracking import store, tags as tag

# A write is one store round trip (~50 ms on SQLite), as long as a small model's whole step, so
# metrics are buffered: written every `tracking.log_every` steps, and also as soon as this long has
# passed since the last write, so slow steps still show up in the UI step by step.
FLUSH_SECONDS = 10.0
_BATCH_LIMIT = 1000  # MLflow's cap on metrics per log_batch call


class TrainTracker:
    def __init__(self, cfg: DictConfig, run_dir: Path, run_id: Optional[str] = None,
                 parent_run_id: Optional[str] = None, tags: Optional[Dict[str, str]] = None) -> None:
        self.uri = store.absolute_uri(cfg.tracking.uri)  # kept in checkpoints: resume finds this store
        self.client = store.client(self.uri, cfg.tracking.artifact_location)
        self.flush_every = max(1, int(cfg.tracking.log_every))
        self._pending: List[Tuple[Dict[str, float], int, int]] = []  # (metrics, step, time in ms)
        self._last_flush = time.monotonic()
        # resume: the last step already in the store per metric. A kill after a flush and before the
        # checkpoint that covers it leaves steps the resumed run computes again (bit-exactly, but
        # for timings); they are skipped, so each step is in the store once.
        self._logged_through: Dict[str, int] = {}
        if run_id is not None:  # resume: continue the same run
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            self._logged_through = self._last_logged_steps()
            return
        all_tags = {tag.KIND: tag.KIND_TRAIN, tag.RUN_DIR: str(Path(run_dir).resolve()),
                    tag.ALGO: cfg.algo.name, **(tags or {})}
        if parent_run_id:
            all_tags[tag.PARENT_RUN_ID] = parent_run_id
        exp = store.experiment_id(self.client, cfg.tracking.experiment)
        run = self.client.create_run(exp, run_name=Path(run_dir).name, tags=all_tags)
        self.run_id = run.info.run_id
        try:
            store.log_params(self.client, self.run_id, store.flatten(cfg))
            self.client.log_artifact(self.run_id, str(Path(run_dir) / "config.yaml"))
        except BaseException:  # never leave a RUNNING run with half its params behind
            self.client.set_terminated(self.run_id, status="FAILED")
            raise

    def _last_logged_steps(self) -> Dict[str, int]:
        keys = self.client.get_run(self.run_id).data.metrics.keys()
        return {key: max(m.step for m in self.client.get_metric_history(self.run_id, key)) for key in keys}

    def log(self, metrics: Dict[str, float], step: int) -> None:
        if self._logged_through:
            metrics = {k: v for k, v in metrics.items() if step > self._logged_through.get(k, -1)}
        self._pending.append((dict(metrics), step, int(time.time() * 1000)))
        if len(self._pending) >= self.flush_every or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Every pending step's metrics in one round trip (per 1000 metrics), stamped when logged."""
        from mlflow.entities import Metric

        items = [Metric(key, float(value), stamp, int(step))
                 for metrics, step, stamp in self._pending for key, value in metrics.items()]
        for start in range(0, len(items), _BATCH_LIMIT):
            self.client.log_batch(self.run_id, metrics=items[start:start + _BATCH_LIMIT])
        self._pending.clear()
        self._last_flush = time.monotonic()

    def set_tags(self, tags: Dict[str, str]) -> None:
        store.set_tags(self.client, self.run_id, tags)

    def end(self, status: str) -> None:
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=status)

    def finish(self, result) -> None:
        final = str(Path(result.final_model_dir).resolve())
        store.set_tags(self.client, self.run_id, {tag.FINAL_MODEL_DIR: final})
        self.client.log_text(self.run_id, final + "\n", "final_model_dir.txt")
        self.end("FINISHED")
