"""What a finished sweep leaves on its parent run: one row per job (overrides, final and best val/acc,
final entropies and lambda) as CSV + Markdown, and the figures that compare the jobs over steps and
the best score against the clamping percentage p."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from aent_cli.sweep.spec import Job
from aent_cli.tracking import figures, store, tables, tags as tag

VAL, TRAIN_ACC = "val/acc", "acc/train"
ENTROPY, CLAMPED, COEF, LENGTH = "actor/entropy", "actor/clamped_entropy", "actor/entropy_coef", "response_length/mean"
HISTORY_KEYS = (VAL, TRAIN_ACC, ENTROPY, CLAMPED, COEF, LENGTH, "reward/mean")
NOT_RUN = "NOT RUN"
Points = List[Tuple[float, float]]


@dataclass
class JobOutcome:
    job: Job
    status: str  # FINISHED | FAILED | KILLED | NOT RUN
    run_id: Optional[str] = None
    error: Optional[str] = None
    params: Dict[str, str] = field(default_factory=dict)
    histories: Dict[str, Points] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.job.label

    def final(self, key: str) -> Optional[float]:
        points = self.histories.get(key)
        return points[-1][1] if points else None

    def best_val(self) -> Tuple[Optional[float], Optional[int]]:
        """Highest val/acc and its step (the earliest step on ties: the checkpoint reached first)."""
        points = self.histories.get(VAL)
        if not points:
            return None, None
        step, value = max(points, key=lambda p: (p[1], -p[0]))
        return value, int(step)

    @property
    def clamped_bonus(self) -> bool:
        return self.params.get("algo.bonus") == "clamped"

    @property
    def p(self) -> Optional[float]:
        value = self.params.get("algo.p")
        return float(value) if value not in (None, "", "None") else None


def collect(client, children: Mapping[int, object], jobs: Sequence[Job], errors: Mapping[int, str]) -> List[JobOutcome]:
    """One outcome per planned job, from its child run (if the job got as far as creating one)."""
    out = []
    for job in jobs:
        run = children.get(job.index)
        if run is None:
            out.append(JobOutcome(job, "FAILED" if job.index in errors else NOT_RUN, error=errors.get(job.index)))
            continue
        run_id = run.info.run_id
        out.append(JobOutcome(job, run.info.status, run_id, run.data.tags.get(tag.ERROR) or errors.get(job.index),
                              dict(run.data.params), store.metric_history(client, run_id, HISTORY_KEYS)))
    return out


class SweepTable(tables.ScoreTable):
    """Values spanning 1e-5 (lambda) to 1 (accuracy): significant digits, best marked on score columns only."""
    score_columns = ("val_final", "val_best")

    def fmt(self, value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.4g}"

    def is_best(self, row: tables.Row, key: str) -> bool:
        return key in self.score_columns and super().is_best(row, key)


def summary_table(outcomes: Sequence[JobOutcome], with_overrides: bool = True) -> SweepTable:
    columns = [("val_final", "val/acc final"), ("val_best", "val/acc best"), ("entropy", "H final"),
               ("clamped", "H~ final"), ("lambda", "lambda final")]
    info = ["status", "best step", "run id"] + (["overrides"] if with_overrides else [])
    if any(o.error for o in outcomes):
        info.append("error")
    rows = []
    for o in outcomes:
        best, best_step = o.best_val()
        values = {"val_final": o.final(VAL), "val_best": best, "entropy": o.final(ENTROPY),
                  "clamped": o.final(CLAMPED), "lambda": o.final(COEF)}
        row_info = {"status": o.status, "best step": "" if best_step is None else str(best_step),
                    "run id": o.run_id or "", "overrides": o.job.text, "error": (o.error or "")[:300]}
        rows.append(tables.Row(f"#{o.job.index} {o.label}", values, row_info))
    return SweepTable(columns=columns, rows=rows, info_columns=info)


def for_terminal(table: SweepTable) -> SweepTable:
    """A narrower copy for the terminal: short headers and run ids; the label already shows the overrides
    that differ, and errors are printed on their own lines."""
    short = {"val_final": "val", "val_best": "best val", "entropy": "H", "clamped": "H~", "lambda": "lambda"}
    rows = [tables.Row(r.label, r.values, {**r.info, "run id": r.info.get("run id", "")[:8]}) for r in table.rows]
    return replace(table, columns=[(k, short.get(k, h)) for k, h in table.columns], rows=rows,
                   info_columns=[c for c in table.info_columns if c in ("status", "run id")])


def curves(outcomes: Sequence[JobOutcome], key: str) -> Dict[str, Points]:
    return {o.label: o.histories.get(key, []) for o in outcomes if o.histories.get(key)}


def score_key(outcomes: Sequence[JobOutcome]) -> str:
    """val/acc when some run measured it more than once, else the training accuracy (every step)."""
    return VAL if any(len(o.histories.get(VAL, [])) > 1 for o in outcomes) else TRAIN_ACC


def best_key(outcomes: Sequence[JobOutcome]) -> str:
    """The score a job's best is taken from: val/acc when measured at all, else the training accuracy."""
    return VAL if any(o.histories.get(VAL) for o in outcomes) else TRAIN_ACC


def best_vs_p(outcomes: Sequence[JobOutcome]) -> Dict[str, Points]:
    """{series: [(p, best score)]} for the clamped-bonus jobs (mean over jobs that share a series and p,
    e.g. seeds), plus each other job's best score as a flat reference line across the p range."""
    key = best_key(outcomes)

    def best(o: JobOutcome) -> Optional[float]:
        points = o.histories.get(key)
        return max(v for _, v in points) if points else None

    by_series: Dict[str, Dict[float, List[float]]] = defaultdict(lambda: defaultdict(list))
    for o in outcomes:
        if o.clamped_bonus and o.p is not None and best(o) is not None:
            series = " ".join(t for t in o.label.split() if not t.startswith("algo.p="))
            series = series or o.params.get("algo.name", "AEnt")
            by_series[series][o.p].append(best(o))
    ps = sorted({p for series in by_series.values() for p in series})
    if len(ps) < 2:
        return {}
    out = {name: sorted((p, sum(v) / len(v)) for p, v in points.items()) for name, points in by_series.items()}
    for o in outcomes:
        if not o.clamped_bonus and best(o) is not None:
            out[o.label] = [(ps[0], best(o)), (ps[-1], best(o))]
    return out


def sweep_figures(outcomes: Sequence[JobOutcome], out_dir: Path) -> List[Path]:
    files = []
    versus_p = best_vs_p(outcomes)
    if versus_p:
        key = best_key(outcomes)
        files.append(figures.plot_metric_over_steps(versus_p, f"Best {key} vs p", f"best {key}",
                                                    out_dir / "best_score_vs_p.png", xlabel="p (clamping percentage)"))
    score = score_key(outcomes)
    for key, name, title, ylabel in [(score, "score", f"{score} over steps", score),
                                     (CLAMPED, "clamped_entropy", "Clamped entropy", "H~ (nats)"),
                                     (COEF, "entropy_coef", "Entropy coefficient", "lambda")]:
        data = curves(outcomes, key)
        if figures.has_data(data):
            files.append(figures.plot_metric_over_steps(data, title, ylabel, out_dir / f"{name}_over_steps.png"))
    return files


def write_summary(table: SweepTable, out_dir: Path) -> List[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "summary.csv", out_dir / "summary.md"
    csv_path.write_text(tables.to_csv(table))
    md_path.write_text(tables.to_markdown(table))
    return [csv_path, md_path]


def log_files(client, run_id: str, files: Sequence[Path]) -> None:
    for path in files:
        client.log_artifact(run_id, str(path), "figures" if path.suffix == ".png" else None)
