"""Progress of `aent eval`: a bar on a terminal; elsewhere (a log file, a Slurm job) a plain line at
least every 30 s and at every 5% of a benchmark's problems: problems and samples done, tokens
generated, tokens/s, elapsed time and ETA.

The rollout backend reports the tokens of every decoding step (`HFRollout.on_tokens`), so the lines
keep coming while one long batch is generated, before any problem of it is done. Until a batch
finishes, the ETA is an upper bound: every remaining decoding step of `max_new_tokens` at the
measured step rate.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from rich.markup import escape

HEARTBEAT_S = 30.0


class BenchProgress:
    """Counts for one model x benchmark; `tokens` and `problems_done` are the callbacks to wire in."""

    def __init__(self, label: str, problems: int, k: int, max_new_tokens: int, batch_size: int) -> None:
        self.label, self.total, self.k = label, problems, k
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.done = 0
        self.generated = 0
        self.steps_in_batch = 0  # decoding steps of the batch being generated
        self.started = time.perf_counter()
        self.batch_started = self.started
        self._lock = threading.Lock()
        self.on_change = None  # set by the display

    def tokens(self, count: int) -> None:
        with self._lock:
            self.generated += count
            self.steps_in_batch += 1
        if self.on_change is not None:
            self.on_change(False)

    def problems_done(self, count: int) -> None:
        with self._lock:
            self.done += count
            self.steps_in_batch = 0
            self.batch_started = time.perf_counter()
        if self.on_change is not None:
            self.on_change(True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def tokens_per_s(self) -> float:
        elapsed = self.elapsed()
        return self.generated / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> Optional[float]:
        """Seconds left: by the problem rate once a batch is done, else an upper bound from the step rate."""
        with self._lock:
            done, steps, batch_started = self.done, self.steps_in_batch, self.batch_started
        if done >= self.total:
            return 0.0
        if done > 0:
            return self.elapsed() / done * (self.total - done)
        if steps == 0:
            return None
        step_s = (time.perf_counter() - batch_started) / steps
        batches_after = max(0, -(-self.total // self.batch_size) - 1)
        return step_s * ((self.max_new_tokens - steps) + batches_after * self.max_new_tokens)

    def line(self) -> str:
        eta = self.eta_s()
        bound = "" if self.done else "<="
        eta_text = "?" if eta is None else f"{bound}{eta:.0f}s"
        return (f"eval {self.label}  {self.done}/{self.total} problems  {self.done * self.k}/{self.total * self.k} "
                f"samples  {self.generated} tokens  {self.tokens_per_s():.1f} tok/s  {self.elapsed():.0f}s  "
                f"ETA {eta_text}")


class _Lines:
    """Plain lines: at each 5% of the problems and, between them, every HEARTBEAT_S seconds."""

    def __init__(self, console, bench: BenchProgress, heartbeat_s: float) -> None:
        self.console, self.bench = console, bench
        self.every = max(1, -(-bench.total // 20))
        self.next_mark = self.every
        self.last_line = time.perf_counter()
        self._stop = threading.Event()
        self._print_lock = threading.Lock()
        self.thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True)
        bench.on_change = self._changed
        self.thread.start()

    def _print(self) -> None:
        with self._print_lock:
            self.last_line = time.perf_counter()
            self.console.print(self.bench.line(), highlight=False, markup=False, soft_wrap=True)

    def _changed(self, problems: bool) -> None:
        if problems and (self.bench.done >= self.next_mark or self.bench.done >= self.bench.total):
            while self.next_mark <= self.bench.done:
                self.next_mark += self.every
            self._print()

    def _beat(self, heartbeat_s: float) -> None:
        while not self._stop.wait(min(heartbeat_s, 1.0)):
            if time.perf_counter() - self.last_line >= heartbeat_s:
                self._print()

    def close(self) -> None:
        self._stop.set()
        self.thread.join()


class EvalProgress:
    """One display for a whole `aent eval`: `bench(...)` opens the counter of one model x benchmark."""

    def __init__(self, console, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.console, self.heartbeat_s = console, heartbeat_s
        self.bar = None
        if console is not None and console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                TimeRemainingColumn(), console=console, transient=False)

    def __enter__(self) -> "EvalProgress":
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    @contextmanager
    def bench(self, label: str, problems: int, k: int, max_new_tokens: int, batch_size: int) -> Iterator[BenchProgress]:
        counter = BenchProgress(label, problems, k, max_new_tokens, batch_size)
        if self.console is None:
            yield counter
            return
        if self.bar is not None:
            task = self.bar.add_task(escape(label), total=problems, stats="")

            def changed(_problems: bool) -> None:
                self.bar.update(task, completed=counter.done,
                                stats=f"{counter.generated} tok  {counter.tokens_per_s():.1f} tok/s")
            counter.on_change = changed
            yield counter
            return
        lines = _Lines(self.console, counter, self.heartbeat_s)
        try:
            yield counter
        finally:
            lines.close()
