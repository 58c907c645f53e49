"""Waiting for a process event with a deadline instead of a fixed sleep (Linux /proc)."""
import os
import signal
import time
from typing import Callable


def terminal_sigint() -> None:
    """preexec_fn for a child that a test interrupts as a terminal's Ctrl-C would: SIGINT handled by
    default (a test run started in the background by a shell without job control inherits SIGINT
    ignored, and Python then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed child of a dead parent can stay a zombie until reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of `pid` in clock ticks (1/100 s on Linux); 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.02) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(poll_s)


def wait_busy(pids, timeout_s: float = 60.0, ticks: int = 20, every: bool = True) -> None:
    """Wait until each process (`every=False`: any one) has used `ticks` more CPU ticks than now:
    it is computing, not blocked on a pipe. 20 ticks = 0.2 CPU s, far above an idle process's wake-ups."""
    start = {pid: cpu_ticks(pid) for pid in pids}
    test = all if every else any
    wait_until(lambda: test(cpu_ticks(p) >= start[p] + ticks for p in pids), timeout_s,
               f"{'all' if every else 'one'} of processes {list(pids)} busy")


def thread_gone(native_id: int) -> bool:
    """The kernel has released this process's thread `native_id` (its exit, including the
    parent-death signals it sends to the children it started, is complete)."""
    return not os.path.exists(f"/proc/self/task/{native_id}")
