"""Grader.start: the math-verify processes are launched ahead of the first batch and then serve it."""
import os

from aent_cli.rewards import Grader


def test_start_launches_the_workers_that_then_grade():
    with Grader(timeout_s=10.0, workers=2) as grader:
        assert grader.worker_pids() == []  # nothing runs until asked
        grader.start()
        pids = grader.worker_pids()
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, 0)  # alive (raises if not)
        batch = grader.grade(["so \\boxed{x = 3}", "\\boxed{\\frac{1}{2}}"], ["3", "0.5"])  # both need math-verify
        assert batch.verified == 2 and batch.correct == [True, True]
        assert grader.worker_pids() == pids  # the started processes did the checks
        grader.start()  # idempotent
        assert grader.worker_pids() == pids
