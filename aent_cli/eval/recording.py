"""One MLflow run per evaluated model (tag aent.kind=eval): scores as `eval/<bench>/<score>_at_<k>`
metrics, per-problem results as table artifacts, the summary as CSV and Markdown artifacts."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Dict, Mapping, Optional

from aent_cli.data.benchmarks import BENCHMARKS
from aent_cli.eval.runner import BenchResult
from aent_cli.eval.scores import score_names
from aent_cli.eval.targets import ModelTarget
from aent_cli.tracking import store, tables, tags as tag

# Short headers so the terminal table fits 80 columns: problems, grading timeouts / errors,
# fraction of samples cut at max_new_tokens, mean response length in tokens, generation tokens/s.
STAT_COLUMNS = ("n", "timeouts", "errors", "cut", "mean len", "tok/s")


def summary_table(results: Mapping[str, BenchResult]) -> tables.ScoreTable:
    """One model's benchmarks as rows, avg/pass/maj@k as columns, plus the grading and length stats."""
    ks = sorted({r.k for r in results.values()})
    columns = [(name, name) for k in ks for name in score_names(k)]
    rows = []
    for bench, result in results.items():
        metrics = result.metrics("m")
        info = {"n": str(len(result.problems)), "timeouts": str(result.timeouts), "errors": str(result.errors),
                "cut": f"{metrics['m/truncated']:.2f}", "mean len": f"{metrics['m/response_length']:.0f}",
                "tok/s": f"{result.perf.get('gen_tokens_per_s', 0.0):.1f}"}
        title = BENCHMARKS[bench].title if bench in BENCHMARKS else bench
        rows.append(tables.Row(title, dict(result.scores), info))
    return tables.ScoreTable(columns, rows, info_columns=list(STAT_COLUMNS), mark_best=False)


class EvalRecorder:
    """The MLflow run of one model's evaluation, written benchmark by benchmark so a crash keeps
    what was finished."""

    def __init__(self, client, experiment: str, target: ModelTarget, params: Dict[str, str]):
        self.client = client
        self.target = target
        tags = {tag.KIND: tag.KIND_EVAL, tag.MODEL: target.label, tag.MODEL_PATH: target.path,
                tag.MODEL_REF: target.ref}
        if target.source_run_id:
            tags.update({tag.SOURCE_RUN_ID: target.source_run_id, tag.CHECKPOINT: target.checkpoint,
                         tag.CHECKPOINT_STEP: "" if target.step is None else str(target.step)})
        run = client.create_run(store.experiment_id(client, experiment), run_name=f"eval-{target.label}", tags=tags)
        self.run_id = run.info.run_id
        store.log_params(client, self.run_id, params)

    def set_tags(self, tags: Dict[str, str]) -> None:
        store.set_tags(self.client, self.run_id, tags)

    def log_bench(self, bench: str, result: BenchResult) -> None:
        step = self.target.step or 0
        store.log_metrics(self.client, self.run_id, result.metrics(f"eval/{bench}"), step=step)
        perf = {f"perf/{bench}/{name}": value for name, value in result.perf.items()}
        perf["perf/peak_rss_mb"] = peak_rss_mb()
        store.log_metrics(self.client, self.run_id, perf, step=step)
        rows = [p.as_row() for p in result.problems]
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        self.client.log_table(self.run_id, data=columns, artifact_file=f"problems/{bench}.json")

    def finish(self, results: Mapping[str, BenchResult], status: str = "FINISHED") -> None:
        if results:
            table = summary_table(results)
            with tempfile.TemporaryDirectory() as tmp:
                markdown = tables.to_markdown(table, f"{self.target.label}: scores per benchmark")
                for name, text in (("summary.csv", tables.to_csv(table)), ("summary.md", markdown)):
                    (Path(tmp) / name).write_text(text, encoding="utf-8")
                    self.client.log_artifact(self.run_id, str(Path(tmp) / name))
        self.client.set_terminated(self.run_id, status=status)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (0 where the platform does not say)."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
    except (ImportError, OSError):
        return 0.0


def comparison_table(results_by_label: Mapping[str, Mapping[str, BenchResult]], score: str = "avg",
                     run_ids: Optional[Mapping[str, str]] = None) -> tables.ScoreTable:
    """Table 1 shape: models as rows, benchmarks as columns (`score`@k), the best per column marked."""
    benches = [b for b in BENCHMARKS if any(b in r for r in results_by_label.values())]
    rows = []
    for label, results in results_by_label.items():
        values = {b: next((v for name, v in results[b].scores.items() if name.startswith(score + "@")), None)
                  for b in benches if b in results}
        rows.append(tables.Row(label, values, {"run": (run_ids or {}).get(label, "")}))
    columns = [(b, BENCHMARKS[b].title) for b in benches]
    if len(columns) > 1:
        columns, rows = tables.with_average(columns, rows)
    return tables.ScoreTable(columns, rows, info_columns=["run"])
