"""What a person watching the terminal sees: warm-start and training progress, a final summary."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from aent_cli.tracking import tables

WARMSTART_LINE_SECONDS = 10.0  # outside a terminal: a warm-start line at least this often
SHOWN = (("reward", "reward/mean"), ("H", "actor/entropy"), ("H~", "actor/clamped_entropy"),
         ("lambda", "actor/entropy_coef"), ("val", "val/acc"))


def _stats(metrics: Dict[str, float], last_val) -> str:
    parts = []
    for label, key in SHOWN:
        value = last_val if key == "val/acc" else metrics.get(key)
        if value is not None:
            parts.append(f"{label} {value:.3g}")
    return "  ".join(parts)


class _StepProgress:
    def __init__(self, progress: Progress, task) -> None:
        self.progress, self.task = progress, task
        self.last_val = None

    def advance(self, step: int, metrics: Dict[str, float]) -> None:
        self.last_val = metrics.get("val/acc", self.last_val)
        self.progress.update(self.task, completed=step, stats=_stats(metrics, self.last_val))


class _LineProgress:
    """Output that is not a terminal (a log file, a Slurm job): a plain line about every 5% of the
    run and at every validation, instead of a bar that only a terminal can redraw."""

    def __init__(self, console: Console, label: str, total: int) -> None:
        self.console, self.label, self.total = console, label, total
        self.every = max(1, total // 20)
        self.started = time.perf_counter()
        self.last_val = None

    def line(self, step: int, stats: str) -> None:
        elapsed = time.perf_counter() - self.started
        self.console.print(f"{self.label} {step}/{self.total}  {elapsed:.0f}s  {stats}", highlight=False,
                           soft_wrap=True, markup=False)

    def advance(self, step: int, metrics: Dict[str, float]) -> None:
        validated = "val/acc" in metrics
        self.last_val = metrics.get("val/acc", self.last_val)
        if validated or step % self.every == 0 or step == self.total:
            self.line(step, _stats(metrics, self.last_val))


class _Silent:
    def advance(self, step: int, metrics: Dict[str, float]) -> None:
        pass


class TrainConsole:
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = tables.console(stderr=True)  # piped: wide enough that the summary keeps whole paths

    def _progress(self) -> Progress:
        return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                        console=self.console, transient=False)

    @contextmanager
    def progress(self, total: int, completed: int = 0) -> Iterator:
        if self.quiet:
            yield _Silent()
            return
        if not self.console.is_terminal:
            yield _LineProgress(self.console, "train", total)
            return
        with self._progress() as progress:
            task = progress.add_task("train", total=total, completed=completed, stats="")
            yield _StepProgress(progress, task)

    def warmstart_progress(self, total: int):
        """A callback for the embedded model's one-time warm start (it takes a couple of minutes)."""
        if self.quiet:
            return lambda step, loss: None
        if not self.console.is_terminal:
            # a line now, then one every WARMSTART_LINE_SECONDS (however slow a step is on a busy machine)
            lines = _LineProgress(self.console, "warm start (first run only)", total)
            lines.line(0, "building the embedded model")
            last = [time.perf_counter()]

            def log_line(step: int, loss: float) -> None:
                now = time.perf_counter()
                if now - last[0] >= WARMSTART_LINE_SECONDS or step == total:
                    lines.line(step, f"loss {loss:.3f}")
                    last[0] = now
            return log_line
        progress = self._progress()
        task = progress.add_task("warm start (first run only)", total=total, stats="")
        progress.start()

        def update(step: int, loss: float) -> None:
            progress.update(task, completed=step, stats=f"loss {loss:.3f}")
            if step >= total:
                progress.stop()
        return update

    def entropy_collapse(self, step: int, ratio: float, fraction: float) -> None:
        """The alarm's one line (Proposition 1: the policy gradient is bounded by a multiple of H)."""
        if not self.quiet:
            self.console.print(f"warning: entropy collapse at step {step}: actor/entropy_collapse {ratio:.2f} < "
                               f"trainer.entropy_collapse_fraction={fraction:g} (token entropy, last 5 steps "
                               "over first 5); the policy gradient is bounded by a multiple of it, so learning "
                               "is stalling", style="bold yellow", highlight=False, soft_wrap=True)

    def summary(self, result) -> None:
        if self.quiet:
            return
        table = Table(title=escape(f"run {result.run_dir.name}  (MLflow run {result.run_id})"))
        table.add_column("metric")
        table.add_column("first", justify="right")
        table.add_column("last", justify="right")
        history = result.history
        for label, key in (("reward/mean", "reward/mean"), ("acc/train", "acc/train"),
                           ("actor/entropy", "actor/entropy"), ("actor/clamped_entropy", "actor/clamped_entropy"),
                           ("actor/entropy_coef", "actor/entropy_coef"), ("response_length/mean", "response_length/mean")):
            values = [h[key] for h in history if key in h]
            if values:
                table.add_row(label, f"{values[0]:.4g}", f"{values[-1]:.4g}")
        if result.val:
            steps = sorted(result.val)
            table.add_row("val/acc", f"{result.val[steps[0]]:.4g} (step {steps[0]})",
                          f"{result.val[steps[-1]]:.4g} (step {steps[-1]})")
        table.add_row("final model", "", escape(str(result.final_model_dir)))
        self.console.print(table)
