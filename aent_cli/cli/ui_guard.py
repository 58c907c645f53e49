"""`python -m aent_cli.cli.ui_guard PARENT_PID -- COMMAND...`: runs `aent ui`'s MLflow server and takes
it down, with every process it started (`mlflow server` runs uvicorn or gunicorn as its child), when
`aent ui` ends, however it ends: Ctrl-C, `kill`, or `kill -9`, which no handler in `aent ui` can see.

The guard is `aent ui`'s child, tied to it by the kernel (Linux `PR_SET_PDEATHSIG`: SIGTERM to the
guard the moment its parent dies) and by polling its parent pid every POLL_S seconds (any POSIX system:
a dead parent's children are re-parented). The server runs in its own process group, so the guard
stops the whole group: SIGTERM, then SIGKILL to whatever is left after STOP_TIMEOUT_S seconds. A kill
-9 of the guard itself is the one case left uncovered.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import List

POLL_S = 0.2
STOP_TIMEOUT_S = 10.0  # the server's own shutdown (uvicorn closes its workers)
LINGER_S = 2.0  # after the server process exits: its workers get this long, then SIGKILL
PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `signum` to this process when its parent dies (Linux; no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the parent-pid poll still notices


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left: at once if the server itself
    outlives STOP_TIMEOUT_S, else once its workers have had LINGER_S to follow it."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + LINGER_S
    while proc.poll() is not None and _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def main(argv: List[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m aent_cli.cli.ui_guard PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    parent, command = int(argv[1]), argv[3:]
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the kernel was asked to tell us
        return 0
    proc = subprocess.Popen(command, start_new_session=True)
    while not stopping and os.getppid() == parent:
        if proc.poll() is not None:
            return proc.returncode
        time.sleep(POLL_S)
    stop_group(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
