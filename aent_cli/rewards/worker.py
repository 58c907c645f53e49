"""A grading worker process: `python -m aent_cli.rewards.worker TIMEOUT_S`.

Reads one JSON task per line on stdin, `{"i": 3, "pred": "...", "ref": "..."}`, and answers one JSON
line on stdout, `{"i": 3, "ok": true, "t": T}` or `{"i": 3, "error": "...", "t": T}`; T is its
time.monotonic() as it moves on to the next queued task (the parent's clock for that task). It
announces `{"ready": true}` once math-verify is imported and warm. The parent
enforces the deadline by killing this process; JSON instead of pickle because the inputs are model
output. Exits at end of stdin (its parent has gone), and is killed by the kernel the moment its
parent dies (`PR_SET_PDEATHSIG`), even while stuck in C code that a Python thread could not stop.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import resource
import signal
import sys
import time

# Address-space cap: a runaway expression fails with MemoryError (scored as an error) instead of
# swapping the machine.
_MEMORY_LIMIT = 4 << 30
# If the parent died while this process was stuck in C code, nobody would kill it: the kernel's CPU
# limit (SIGXCPU terminates) does, this many times the task timeout after the task starts.
_ORPHAN_CPU_FACTOR = 4


def _set_limit(kind: int, soft: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    try:
        resource.setrlimit(kind, (soft, hard))
    except (ValueError, OSError):
        pass  # a stricter limit is already in place


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux); exit now if the parent is already gone."""
    parent = os.environ.get("AENT_GRADER_PARENT")
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the CPU limit below still ends an orphan
    if parent and os.getppid() != int(parent):  # the parent died before the line above ran
        os._exit(0)


def _send(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    timeout_s = float(argv[1]) if len(argv) > 1 else 5.0
    # Ctrl-C reaches the whole process group; the parent handles it and closes its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    _set_limit(resource.RLIMIT_AS, _MEMORY_LIMIT)
    try:
        from aent_cli.rewards.equivalence import is_equivalent  # math-verify, in the worker process only

        is_equivalent("\\frac{1}{2}", "0.5")  # warm the parser so the first task is not slower
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        _send({"fatal": f"{type(exc).__name__}: {exc}"})
        return 1
    _send({"ready": True})
    for line in sys.stdin:
        task = json.loads(line)
        budget = math.ceil(_cpu_seconds() + _ORPHAN_CPU_FACTOR * timeout_s + 10)
        _set_limit(resource.RLIMIT_CPU, budget)
        try:
            ok = is_equivalent(task["pred"], task["ref"], task.get("percent", "scale"))
            _send({"i": task["i"], "ok": ok, "t": time.monotonic()})
        except Exception as exc:  # noqa: BLE001 - any failure of a parse scores 0, counted
            _send({"i": task["i"], "error": f"{type(exc).__name__}: {str(exc)[:200]}", "t": time.monotonic()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
