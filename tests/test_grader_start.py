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


def test_start_for_plain_number_answers_waits_for_a_pair_that_needs_math_verify():
    with Grader(timeout_s=10.0) as grader:
        grader.start_for(["3", "-12", "0.5", " 7 "])
        assert grader.worker_pids() == []  # numbers: no process at the start
        batch = grader.grade(["\\boxed{3}", "\\boxed{4}"], ["3", "-12"])
        assert batch.verified == 0 and batch.correct == [True, False] and grader.worker_pids() == []
        batch = grader.grade(["\\boxed{\\frac{1}{2}}"], ["0.5"])  # a fraction: math-verify, started now
        assert batch.verified == 1 and batch.correct == [True] and len(grader.worker_pids()) == 1
    with Grader(timeout_s=10.0) as grader:
        grader.start_for(["3", "\\frac{1}{2}"])  # one symbolic answer: warmed up at once
        assert len(grader.worker_pids()) == 1
