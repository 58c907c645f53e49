"""Worker processes that check answer pairs with a hard deadline per pair.

A process, not a thread, because the only reliable way to stop sympy inside a C-level computation
(`9^{9^{9^{9}}}`) is to kill the process running it. Workers are plain subprocesses speaking JSON
lines (`worker.py`), so nothing is pickled and the parent's `__main__` is never re-imported; they are
started once, reused across batches, and a worker that passes its deadline is killed and replaced.
Works from any thread of the parent.

Workers never outlive the parent: each runs in its own session (process group), so a Ctrl-C at the
terminal does not reach it, and asks the kernel for SIGKILL when its parent dies (Linux
`PR_SET_PDEATHSIG`, see `worker.py`), even while it is stuck in C code. The kernel ties that signal
to the thread that started the process, so every worker is started from one long-lived thread.

Time limits: each pair gets `timeout_s` from when a worker takes it. A call that finds no worker
ready (start-up: importing sympy) waits at most `timeout_s` for one; pairs still waiting then are
scored as timeouts, so no call grades for longer than its limit (queued pairs aside).
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Deque, List, Optional, Sequence, Tuple

_START_TIMEOUT_S = 120.0  # importing sympy on a loaded machine can take a while; a hang cannot
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])

OK, TIMEOUT, ERROR = "ok", "timeout", "error"
# Pairs queued on a worker ahead of its answers, so it never idles waiting for this process to be
# scheduled (a round trip per pair halved throughput on a loaded machine). Bytes stay well under
# a pipe's 64 KiB buffer, so a write never blocks.
_PIPELINE, _PIPELINE_BYTES = 8, 16 << 10
PARENT_ENV = "AENT_GRADER_PARENT"  # the pid a worker must outlive no longer than

_spawner: Optional[Tuple[int, ThreadPoolExecutor]] = None  # (owning pid, executor)


def _spawn(*args, **kwargs) -> subprocess.Popen:
    """Popen from one thread that lives as long as this process (see the module docstring)."""
    global _spawner
    if _spawner is None or _spawner[0] != os.getpid():  # a forked child does not inherit the thread
        _spawner = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="aent-grader-spawner"))
    return _spawner[1].submit(subprocess.Popen, *args, **kwargs).result()


class GraderError(RuntimeError):
    """The grading workers cannot run at all (broken install), as opposed to one bad answer."""


@dataclass(frozen=True)
class Outcome:
    equivalent: bool
    status: str = OK  # ok | timeout | error
    detail: str = ""


class _Worker:
    def __init__(self, timeout_s: float):
        env = dict(os.environ)
        # The child must import this package even from an uninstalled checkout.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        env[PARENT_ENV] = str(os.getpid())
        self.stderr = tempfile.TemporaryFile()
        self.proc = _spawn(
            [sys.executable, "-m", "aent_cli.rewards.worker", repr(timeout_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env, bufsize=0,
            start_new_session=True,
        )
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.ready = False
        self.served = False  # has taken a task since it became ready
        self.spawned_at = time.monotonic()
        self.tasks: Deque[int] = deque()  # sent, not answered; the worker is running the first
        self.sizes: Deque[int] = deque()  # bytes of each task in `tasks`
        self.queued_bytes = 0
        self.deadline = time.monotonic() + _START_TIMEOUT_S  # of the first task (or of the start-up)

    @property
    def task(self) -> Optional[int]:
        return self.tasks[0] if self.tasks else None

    @property
    def idle(self) -> bool:
        return self.ready and not self.tasks

    @property
    def can_take(self) -> bool:
        return self.ready and len(self.tasks) < _PIPELINE and self.queued_bytes < _PIPELINE_BYTES

    def send(self, index: int, predicted: str, reference: str, deadline: float, percent: str = "scale") -> None:
        """Queue a pair; `deadline` (time.monotonic()) applies if the worker starts it now."""
        line = (json.dumps({"i": index, "pred": predicted, "ref": reference, "percent": percent}) + "\n").encode()
        if not self.tasks:
            self.deadline = deadline
        self.tasks.append(index)
        self.sizes.append(len(line))
        self.served = True
        self.queued_bytes += len(line)
        self.proc.stdin.write(line)

    def finish_first(self, started_next: float, timeout_s: float) -> int:
        """The first task is answered; the next one (if any) started at `started_next`."""
        self.queued_bytes -= self.sizes.popleft()
        index = self.tasks.popleft()
        self.deadline = started_next + timeout_s
        return index

    def read(self) -> Optional[List[dict]]:
        """Complete messages available now; None when the process has exited."""
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace").strip()[-500:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: it and anything it started
            except OSError:
                self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
            try:
                stream.close()
            except OSError:
                pass


def _kill_all(workers: List[_Worker], spare: List[_Worker]) -> None:
    for worker in workers + spare:
        worker.kill()
    workers.clear()
    spare.clear()


class VerifierPool:
    """`size` persistent worker processes; `run` checks (predicted, reference) pairs."""

    def __init__(self, size: int, timeout_s: float, percent: str = "scale"):
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.size = size
        self.timeout_s = timeout_s
        self.percent = percent
        self._workers: List[_Worker] = []
        self._wait_start = 0.0  # since when the pairs now waiting for a worker have waited
        # Kills the workers when the pool is garbage-collected or the interpreter exits unclosed.
        # One spare process, started with the workers, takes over at once from a worker killed on
        # its deadline, so the pairs after a timeout do not wait for a start-up.
        self._spare: List[_Worker] = []
        self._finalizer = weakref.finalize(self, _kill_all, self._workers, self._spare)

    def pids(self) -> List[int]:
        return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        """Kill the workers (idempotent; a later `run` starts new ones)."""
        self._finalizer()

    def start(self, wait: bool = False) -> None:
        """Start the missing workers now: they import and warm up math-verify (about a second) in
        the background, so the first batch that needs one does not. `wait=True` blocks until every
        worker is ready (GraderError if one fails to start)."""
        self._fill()
        while wait and not all(w.ready for w in self._workers):
            starting = [w for w in self._workers if not w.ready]
            wait_s = max(0.0, min(w.deadline for w in starting) - time.monotonic())
            readable, _, _ = select.select([w.fd for w in starting], [], [], wait_s)
            for worker in starting:
                if worker.fd in readable:
                    self._startup_messages(worker)
                elif time.monotonic() >= worker.deadline:
                    raise GraderError(f"a grading worker did not start within {_START_TIMEOUT_S:.0f} s")

    @staticmethod
    def _startup_messages(worker: _Worker) -> None:
        messages = worker.read()
        if messages is None:
            raise GraderError(f"a grading worker failed to start: {worker.stderr_tail()}")
        for msg in messages:
            if "fatal" in msg:
                raise GraderError(f"a grading worker failed to start: {msg['fatal']}")
            if msg.get("ready"):
                worker.ready = True

    def _fill(self) -> None:
        """Start the missing workers and the spare (after a close, with a new exit hook)."""
        if not self._finalizer.alive:
            self._finalizer = weakref.finalize(self, _kill_all, self._workers, self._spare)
        while len(self._workers) < self.size:
            self._workers.append(_Worker(self.timeout_s))
        if not self._spare:
            self._spare.append(_Worker(self.timeout_s))

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = self._spare.pop() if self._spare else _Worker(self.timeout_s)
        self._spare.append(_Worker(self.timeout_s))
        self._wait_start = time.monotonic()  # pairs left waiting get a full limit for the new worker

    def run(self, pairs: Sequence[Tuple[str, str]]) -> List[Outcome]:
        if not pairs:
            return []
        self._fill()
        for worker in list(self._workers):
            if worker.tasks:  # left busy by an interrupted run: its replies would be stale
                self._replace(worker)
        results: List[Optional[Outcome]] = [None] * len(pairs)
        pending = deque(range(len(pairs)))
        remaining = len(pairs)
        self._wait_start = time.monotonic()
        while remaining:
            no_worker = not any(w.ready for w in self._workers)
            if pending and no_worker and time.monotonic() >= self._wait_start + self.timeout_s:
                for index in pending:  # no worker came up within the limit: scored as timeouts
                    results[index] = Outcome(False, TIMEOUT, f"no grading worker ready within {self.timeout_s:g} s")
                remaining -= len(pending)
                pending.clear()
                continue
            for worker in list(self._workers):
                while worker.can_take and pending:
                    index = pending.popleft()
                    # A pair that waited for this worker to start has been on the clock since the
                    # call began (or the last replacement, or the worker's start), not since now.
                    since = max(self._wait_start, worker.spawned_at) if not worker.served else time.monotonic()
                    try:
                        worker.send(index, *pairs[index], since + self.timeout_s, self.percent)
                    except OSError:  # died between tasks: retry its pairs on a fresh worker
                        pending.extendleft(reversed(worker.tasks))
                        self._replace(worker)
                        break
            waiting = [w for w in self._workers if not w.ready or w.tasks]
            if not waiting:
                continue
            deadlines = [w.deadline for w in waiting]
            if pending and not any(w.ready for w in self._workers):
                deadlines.append(self._wait_start + self.timeout_s)
            wait_s = max(0.0, min(deadlines) - time.monotonic())
            readable, _, _ = select.select([w.fd for w in waiting], [], [], wait_s)
            for worker in [w for w in waiting if w.fd in readable]:
                messages = worker.read()
                if messages is None:  # the process died (crash, memory or CPU limit)
                    if not worker.ready:
                        raise GraderError(f"a grading worker failed to start: {worker.stderr_tail()}")
                    results[worker.tasks.popleft()] = Outcome(False, ERROR, "worker process died")
                    remaining -= 1
                    pending.extendleft(reversed(worker.tasks))  # queued behind it: retried
                    self._replace(worker)
                    continue
                for msg in messages:
                    if "fatal" in msg:
                        raise GraderError(f"a grading worker failed to start: {msg['fatal']}")
                    if msg.get("ready"):
                        worker.ready = True
                    elif worker.tasks and msg.get("i") == worker.task:
                        error = msg.get("error")
                        index = worker.finish_first(msg.get("t", time.monotonic()), self.timeout_s)
                        results[index] = Outcome(bool(msg.get("ok")), ERROR if error else OK, error or "")
                        remaining -= 1
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.deadline > now or worker.idle:
                    continue
                if not worker.ready:
                    raise GraderError(f"a grading worker did not start within {_START_TIMEOUT_S:.0f} s")
                results[worker.tasks.popleft()] = Outcome(False, TIMEOUT, f"over {self.timeout_s:g} s")
                remaining -= 1
                pending.extendleft(reversed(worker.tasks))  # queued behind it: retried on the spare
                self._replace(worker)
        return results  # type: ignore[return-value]
