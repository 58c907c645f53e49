"""`aent report`: the paper's Table 1 and Fig. 3/4 from MLflow runs.

Rows are training runs (with the eval runs that `aent eval --model RUN_ID` linked to them through the
tag `aent.source_run_id`) and eval runs of plain model directories (e.g. the base model). A training
run's scores come from its eval runs, one checkpoint per row: by default the checkpoint with the
highest average score over the benchmarks (the paper's choice), or the final one. Training runs
without eval runs fall back to their `val/acc` history (column named after `data.val`).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from aent_cli.data.benchmarks import BENCHMARKS
from aent_cli.errors import UserError
from aent_cli.tracking import figures, store, tables, tags as tag
from aent_cli.tracking.tags import CHECKPOINT, CHECKPOINT_STEP, KIND, SOURCE_RUN_ID
VAL_COLUMN = "val"
ALGO_LABELS = {"grpo": "GRPO", "entreg": "EntReg", "aent": "AEnt"}
_METRIC = re.compile(r"^eval/([^/]+)/(avg|pass|maj)_at_(\d+)$")  # eval/math500/avg_at_4
CURVES = {"val/acc": ("Test score vs step", "val/acc"),
          "actor/entropy": ("Entropy", "entropy (nats)"),
          "actor/clamped_entropy": ("Clamped entropy", "clamped entropy (nats)"),
          "response_length/mean": ("Response length", "tokens"),
          "actor/entropy_coef": ("Entropy coefficient", "λ")}


class ReportError(UserError):
    """Unknown run ids, experiments or option values for `aent report`."""


@dataclass
class Subject:
    """One row of the table: a training run with its eval runs, or eval runs of one model directory."""
    key: str
    name: str
    label: str
    train_run: Optional[object] = None
    eval_runs: List[object] = field(default_factory=list)


@dataclass
class ReportResult:
    table: tables.ScoreTable
    files: List[Path]
    run_id: Optional[str]
    score: str
    ks: List[int]  # the k of the eval scores shown (empty when all rows come from val/acc)

    @property
    def title(self) -> str:
        """Names the score the table really shows: `score@k` from eval runs, val/acc for rows without."""
        from_val = any(row.info.get("source") == "val/acc" for row in self.table.rows)
        if not self.ks:
            return "Validation accuracy (val/acc, avg@trainer.val_n)" if from_val else "Test scores (none recorded)"
        shown = f"{self.score}@{','.join(map(str, self.ks))}"
        return f"Test scores ({shown}; rows with source val/acc: val/acc)" if from_val else f"Test scores ({shown})"


def _get_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ReportError(f"unknown MLflow run id {run_id!r} in store {client.tracking_uri}") from None


def select_runs(client, run_ids: Sequence[str] = (), experiment: Optional[str] = None,
                parent: Optional[str] = None) -> List[object]:
    """The runs named on the command line: ids, every train/eval run of an experiment, or a sweep's children."""
    runs = [_get_run(client, run_id) for run_id in run_ids]
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise ReportError(f"unknown MLflow experiment {experiment!r} in store {client.tracking_uri}")
        for kind in (tag.KIND_TRAIN, tag.KIND_EVAL):
            runs += store.search_runs(client, [found.experiment_id], f"tags.`{KIND}` = '{kind}'")
    if parent:
        parent_run = _get_run(client, parent)
        runs += store.search_runs(client, [parent_run.info.experiment_id], f"tags.`{tag.PARENT_RUN_ID}` = '{parent}'")
    if not (run_ids or experiment or parent):
        raise ReportError("nothing to report: pass --run ID, --experiment NAME or --parent SWEEP_RUN_ID")
    listed = len(run_ids)
    runs = runs[:listed] + sorted(runs[listed:], key=lambda run: run.info.start_time or 0)
    unique = {run.info.run_id: run for run in runs}  # keeps the first position of each run
    if not unique:
        raise ReportError("no runs found for the given --experiment/--parent")
    return list(unique.values())


def build_subjects(client, runs: Sequence[object]) -> List[Subject]:
    """Group runs into rows: a training run gathers the eval runs linked to it (from any experiment);
    eval runs of a model directory (or of a training run that no longer exists) group by that model.
    Rows without a training run (the base model) come first, as in the paper; otherwise run order."""
    subjects: Dict[str, Subject] = {}
    experiment_ids = None
    for run in runs:
        tags = run.data.tags
        source = _source_run(client, tags.get(SOURCE_RUN_ID)) if tags.get(KIND) == tag.KIND_EVAL else None
        if source is not None:
            subject = subjects.setdefault(source.info.run_id, Subject(source.info.run_id, "", "", train_run=source))
            if all(r.info.run_id != run.info.run_id for r in subject.eval_runs):
                subject.eval_runs.append(run)
        elif tags.get(KIND) == tag.KIND_EVAL:
            key = "model:" + tags.get(tag.MODEL, run.info.run_id)
            subject = subjects.setdefault(key, Subject(key, run.info.run_name, tags.get(tag.MODEL) or run.info.run_name))
            subject.eval_runs.append(run)
        else:
            subjects.setdefault(run.info.run_id, Subject(run.info.run_id, "", "")).train_run = run
    for subject in subjects.values():
        if subject.train_run is None:
            continue
        subject.name = subject.train_run.info.run_name
        experiment_ids = experiment_ids or store.experiment_ids(client)
        linked = store.search_runs(client, experiment_ids, f"tags.`{SOURCE_RUN_ID}` = '{subject.key}' and tags.`{KIND}` = '{tag.KIND_EVAL}'")
        known = {r.info.run_id for r in subject.eval_runs}
        subject.eval_runs += [r for r in linked if r.info.run_id not in known]
        algo = subject.train_run.data.params.get("algo.name", "")
        subject.label = ALGO_LABELS.get(algo, algo) or subject.name
    label_by_difference([s for s in subjects.values() if s.train_run is not None])
    return sorted(subjects.values(), key=lambda subject: subject.train_run is not None)


# Params that differ between runs without making them different experiments.
_NOT_A_SETTING = ("trainer.run_name", "trainer.output_dir", "trainer.resume", "trainer.stop_after", "tracking.",
                  "eval.", "hydra.", "notes")
MAX_LABEL_KEYS = 3


def differing_params(runs: Sequence[object]) -> List[str]:
    """The config keys (MLflow params) whose values differ between these training runs, `algo.*` first."""
    params = [run.data.params for run in runs]
    keys = sorted({k for p in params for k in p if not k.startswith(_NOT_A_SETTING)},
                  key=lambda k: (not k.startswith("algo."), k))
    return [k for k in keys if len({p.get(k) for p in params}) > 1]


def label_by_difference(train_subjects: Sequence[Subject]) -> None:
    """Rows with the same algorithm label get what differs between their runs: `AEnt p=0.2`,
    `AEnt p=0.5` (a key's last part, or the full key when the last part is ambiguous)."""
    groups: Dict[str, List[Subject]] = {}
    for subject in train_subjects:
        groups.setdefault(subject.label, []).append(subject)
    for label, group in groups.items():
        if len(group) < 2:
            continue
        keys = differing_params([s.train_run for s in group])[:MAX_LABEL_KEYS]
        leaves = [k.rsplit(".", 1)[-1] for k in keys]
        names = [leaf if leaves.count(leaf) == 1 else key for key, leaf in zip(keys, leaves)]
        for subject in group:
            params = subject.train_run.data.params
            parts = [f"{name}={params.get(key, '-')}" for name, key in zip(names, keys)]
            subject.label = " ".join([label] + parts) if parts else label


def _source_run(client, run_id: Optional[str]):
    """The training run an eval run names, or None when it names none or the run is gone."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def apply_labels(subjects: Sequence[Subject], labels: Sequence[str]) -> None:
    """`ID=Label` (a run id, its first characters, or a run name) or plain labels taken in row order.
    Labels that collide get the run name appended, so every row stays identifiable."""
    plain = []
    for item in labels:
        target, sep, label = item.partition("=")
        matches = [s for s in subjects if sep and (s.name == target or (len(target) >= 6 and s.key.startswith(target))
                                                   or s.key == "model:" + target)]
        if not sep:
            plain.append(item)
        elif not matches:
            raise ReportError(f"--label {item!r}: no selected run has id or name {target!r}")
        for subject in matches:
            subject.label = label
    if len(plain) > len(subjects):
        raise ReportError(f"{len(plain)} --label values for {len(subjects)} rows")
    for subject, label in zip(subjects, plain):
        subject.label = label
    counts: Dict[str, int] = {}
    for subject in subjects:
        counts[subject.label] = counts.get(subject.label, 0) + 1
    for subject in subjects:
        if counts[subject.label] > 1:
            subject.label = f"{subject.label} ({subject.name})"


def eval_scores(run, score: str) -> Dict[str, Tuple[float, int]]:
    """{bench: (value, k)} from a run's `eval/<bench>/<score>_at_<k>` metrics (the largest k if several)."""
    out: Dict[str, Tuple[float, int]] = {}
    for key, value in run.data.metrics.items():
        match = _METRIC.match(key)
        if match and match.group(2) == score:
            bench, k = match.group(1), int(match.group(3))
            if bench not in out or k > out[bench][1]:
                out[bench] = (value, k)
    return out


def _checkpoint_order(checkpoint: str, step: Optional[int]) -> float:
    return float("inf") if checkpoint == "final" else float(step if step is not None else -1)


def choose_checkpoint(eval_runs: Sequence[object], score: str, how: str) -> Optional[Tuple[str, Dict[str, Tuple[float, int]]]]:
    """(checkpoint name, {bench: (value, k)}) for the row. Eval runs of one checkpoint merge (a later
    run wins per benchmark). `best`: most benchmarks, then the highest mean; `final`: the last one."""
    by_checkpoint: Dict[str, Dict[str, Tuple[float, int]]] = {}
    order: Dict[str, float] = {}
    for run in sorted(eval_runs, key=lambda r: r.info.start_time or 0):
        tags = run.data.tags
        checkpoint = tags.get(CHECKPOINT) or "model"
        step = tags.get(CHECKPOINT_STEP)
        by_checkpoint.setdefault(checkpoint, {}).update(eval_scores(run, score))
        order[checkpoint] = _checkpoint_order(checkpoint, int(step) if step and step.isdigit() else None)
    by_checkpoint = {name: values for name, values in by_checkpoint.items() if values}
    if not by_checkpoint:
        return None
    if how == "final":
        name = max(by_checkpoint, key=lambda c: order[c])
    else:
        def rank(name: str):
            values = [v for v, _ in by_checkpoint[name].values()]
            return len(values), sum(values) / len(values), order[name]
        name = max(by_checkpoint, key=rank)
    return name, by_checkpoint[name]


def val_column(train_run) -> str:
    """The benchmark `data.val` points at (`.../math500.jsonl` -> math500), else `val`."""
    stem = Path(train_run.data.params.get("data.val", "")).stem
    return stem if stem in BENCHMARKS else VAL_COLUMN


def val_score(client, train_run, how: str) -> Optional[Tuple[int, float]]:
    """(step, val/acc) at the best step or the last one."""
    history = store.metric_history(client, train_run.info.run_id, ["val/acc"])["val/acc"]
    if not history:
        return None
    return max(history, key=lambda p: (p[1], -p[0])) if how == "best" else history[-1]


def build_table(client, subjects: Sequence[Subject], score: str = "avg",
                checkpoint: str = "best") -> Tuple[tables.ScoreTable, List[int]]:
    """The table, and the k values of the eval scores in it."""
    rows, ks, used = [], set(), set()
    for subject in subjects:
        chosen = choose_checkpoint(subject.eval_runs, score, checkpoint)
        run_id = subject.train_run.info.run_id if subject.train_run else subject.eval_runs[0].info.run_id
        if chosen is not None:
            name, values = chosen
            ks.update(k for _, k in values.values())
            row = tables.Row(subject.label, {bench: v for bench, (v, _) in values.items()},
                             {"checkpoint": name, "source": "eval", "run": run_id})
        elif subject.train_run is not None and (found := val_score(client, subject.train_run, checkpoint)):
            step, value = found
            row = tables.Row(subject.label, {val_column(subject.train_run): value},
                             {"checkpoint": f"step_{int(step)}", "source": "val/acc", "run": run_id})
        else:
            row = tables.Row(subject.label, {}, {"checkpoint": "-", "source": "no scores", "run": run_id})
        used.update(row.values)
        rows.append(row)
    columns = [(name, BENCHMARKS[name].title) for name in BENCHMARKS if name in used]
    columns += [(name, name) for name in sorted(used) if name not in BENCHMARKS]
    if len(columns) > 1:
        columns, rows = tables.with_average(columns, rows)
    return tables.ScoreTable(columns, rows, info_columns=["checkpoint", "source", "run"]), sorted(ks)


def draw_figures(client, subjects: Sequence[Subject], out_dir: Path, smooth_window: int = 1,
                 smoothing: float = figures.DEFAULT_SMOOTHING) -> List[Path]:
    """Fig. 3 (val/acc), Fig. 4 (entropy, clamped entropy, response length) and the entropy coefficient,
    over the training runs; a figure whose metrics no run logged is skipped. The clamped-entropy panel
    shades the runs' H~ band [h_low, h_high], the coefficient panel draws their lambda bounds."""
    train = [s for s in subjects if s.train_run is not None]
    histories = {s.label: store.metric_history(client, s.train_run.info.run_id, CURVES) for s in train}
    panels = {key: figures.Panel(figures.select(histories, key), *CURVES[key]) for key in CURVES}
    params = [s.train_run.data.params for s in train]
    panels["actor/clamped_entropy"].bands = figures.entropy_bands(params)
    panels["actor/entropy_coef"].hlines = figures.coef_bounds(params)
    plans = [("fig3_test_score.png", ["val/acc"], "Test score (val/acc) vs step"),
             ("fig4_entropy_length.png", ["actor/entropy", "actor/clamped_entropy", "response_length/mean"],
              "Entropy and response length vs step"),
             ("entropy_coef.png", ["actor/entropy_coef"], "Entropy coefficient vs step")]
    written = []
    for file_name, keys, title in plans:
        chosen = [panels[key] for key in keys if figures.has_data(panels[key].histories)]
        if chosen:
            written.append(figures.plot_panels(chosen, out_dir / file_name, suptitle=title if len(chosen) > 1 else None,
                                               smooth_window=smooth_window, smoothing=smoothing))
    return written


def make_report(client, run_ids: Sequence[str] = (), experiment: Optional[str] = None, parent: Optional[str] = None,
                labels: Sequence[str] = (), checkpoint: str = "best", score: str = "avg",
                out_dir: str | Path = "reports", log_to: Optional[str] = "aent", smooth_window: int = 1,
                smoothing: float = figures.DEFAULT_SMOOTHING) -> ReportResult:
    """Select runs, write table1.{md,csv} and the figures to `out_dir`, and record them in a report
    run (tag aent.kind=report) in experiment `log_to` (None: no report run)."""
    if checkpoint not in ("best", "final"):
        raise ReportError(f"checkpoint={checkpoint!r}: choose best or final")
    if score not in ("avg", "pass", "maj"):
        raise ReportError(f"score={score!r}: choose avg, pass or maj")
    subjects = build_subjects(client, select_runs(client, run_ids, experiment, parent))
    apply_labels(subjects, labels)
    table, ks = build_table(client, subjects, score, checkpoint)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ReportResult(table, [], None, score, ks)
    (out_dir / "table1.md").write_text(tables.to_markdown(table, f"{result.title}, checkpoint: {checkpoint}"),
                                       encoding="utf-8")
    (out_dir / "table1.csv").write_text(tables.to_csv(table), encoding="utf-8")
    files = [out_dir / "table1.md", out_dir / "table1.csv"] + draw_figures(client, subjects, out_dir, smooth_window,
                                                                                   smoothing)
    result.files = files
    if log_to:
        reported = [s.train_run.info.run_id if s.train_run else s.eval_runs[0].info.run_id for s in subjects]
        run_tags = {KIND: tag.KIND_REPORT, tag.REPORT_RUNS: ",".join(reported)[:5000],
                    tag.REPORT_CHECKPOINT: checkpoint, tag.REPORT_SCORE: score}
        run = client.create_run(store.experiment_id(client, log_to),
                                run_name=f"report-{time.strftime('%Y%m%d-%H%M%S')}", tags=run_tags)
        result.run_id = run.info.run_id
        for path in files:
            client.log_artifact(result.run_id, str(path))
        client.set_terminated(result.run_id)
    return result
