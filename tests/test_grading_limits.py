"""Grading is bounded: extraction linear in the response, every call under its time limit (a cold
`math_reward` included), and no grading process outliving a trainer killed with kill -9."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from aent_cli.eval.scores import normalize_answer
from aent_cli.rewards import Grader, extract_answer, grader as grader_module, math_reward
from proc_wait import running, thread_gone, wait_busy, wait_until

REPO = Path(__file__).resolve().parents[1]
MB = 1 << 20
PATHOLOGICAL = "\\boxed{9^{9^{9^{9^{9}}}}}"  # sympy would compute a ~370-million-digit power

# 1 MB prefixes that break naive brace matching or regex backtracking, each ending in a real answer.
ADVERSARIAL = {
    "unclosed boxes": "\\boxed{" * (MB // 7),
    "spaced boxes": "\\boxed " * (MB // 7),
    "open braces": "\\boxed{" + "{" * MB,
    "close braces": "}" * MB,
    "nested boxes": "\\boxed{" * (MB // 14) + "}" * (MB // 14),
    "backslashes": "\\" * MB,
    "dollars": "$" * MB,
    "display openers": "\\[" * (MB // 2),
    "answer phrases": "The answer is " * (MB // 14),
    "digits": "1" * MB,
    "spaced digits": "1 " * (MB // 2),
}




def _cpu_seconds(text: str, mode: str) -> float:
    """Best of two: the CPU time of one extraction plus its maj@k key."""
    best = float("inf")
    for _ in range(2):
        start = time.process_time()
        normalize_answer(extract_answer(text, mode))
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_extraction_is_linear_on_adversarial_megabytes(name):
    """Growth, not speed: 8x the adversarial prefix (128 KB -> 1 MB) costs at most 20x the CPU time
    (linear is 8x; the quadratic extraction this guards against was 64x, and ran past 150 s at 210 KB).
    A 10 ms floor on the small run keeps timer noise from deciding."""
    for suffix in (" so the answer is \\boxed{42}", ""):  # with a final answer, and without
        for mode in ("strict", "auto", "last_number"):
            large = ADVERSARIAL[name] + suffix
            small = ADVERSARIAL[name][: len(ADVERSARIAL[name]) // 8] + suffix
            t_small, t_large = _cpu_seconds(small, mode), _cpu_seconds(large, mode)
            assert t_large < 20 * max(t_small, 0.01), (
                f"{name} {mode} {suffix!r}: {t_small:.3f} s at 128 KB, {t_large:.3f} s at 1 MB")
    assert extract_answer(ADVERSARIAL[name] + " so the answer is \\boxed{42}", "strict") == "42"


def test_extraction_finds_the_answer_after_adversarial_prefixes():
    assert extract_answer("\\boxed{" * 8000 + "\\boxed{42}", "strict") == "42"
    assert extract_answer("\\boxed{" * 8000 + "\\boxed{42}", "auto") == "42"
    assert extract_answer("{" * 8000 + "The answer is $7$.", "auto") == "7"
    assert extract_answer("\\boxed{" * 30000, "strict") is None  # never closed: no answer


def test_a_huge_response_is_graded_within_the_limit():
    """The whole call: extraction (linear, in this process) plus at most the time limit."""
    timeout_s = 2.0
    with Grader(timeout_s=timeout_s) as g:
        for name, text in ADVERSARIAL.items():
            responses = [text + " \\boxed{42}", text]
            start = time.monotonic()
            for response in responses:
                extract_answer(response, g.extractor)
            extraction = time.monotonic() - start
            start = time.monotonic()
            batch = g.grade(responses, ["42", "42"])
            elapsed = time.monotonic() - start
            assert elapsed < timeout_s + 2 * extraction + 1.5, f"{name}: {elapsed:.2f} s"
            assert batch.correct == [True, False], name


def test_a_cold_call_returns_within_its_time_limit():
    """No worker started yet and a pair that would run forever: the call still ends at the limit,
    the start-up counted in it, and scores a counted timeout."""
    timeout_s = 2.0
    with Grader(timeout_s=timeout_s) as g:
        start = time.monotonic()
        batch = g.grade([PATHOLOGICAL], ["1"])
        elapsed = time.monotonic() - start
        assert batch.correct == [False] and batch.timeouts == 1 and batch.statuses == ["timeout"]
        assert elapsed < timeout_s + 1.5, elapsed


def test_a_direct_math_reward_call_in_the_main_process_is_bounded():
    grader_module.default_grader().close()
    with grader_module._default_lock:
        grader_module._default = None  # a cold start, as a user's first call
    try:
        start = time.monotonic()
        assert math_reward(PATHOLOGICAL, "1") == 0.0
        elapsed = time.monotonic() - start
        assert elapsed < grader_module.default_grader().timeout_s + 1.5, elapsed
    finally:
        grader_module.default_grader().close()


TRAINER = textwrap.dedent("""
    import sys, time
    from aent_cli.rewards import Grader
    g = Grader(timeout_s=120.0, workers=2)
    g.start(wait=True)
    print(" ".join(map(str, g._pool.pids() + [w.proc.pid for w in g._pool._spare])), flush=True)
    g.grade(["\\\\boxed{9^{9^{9^{9^{9}}}}}", "\\\\boxed{8^{8^{8^{8^{8}}}}}"], ["1", "2"])  # stuck for 120 s
""")


def test_workers_die_with_a_trainer_killed_by_sigkill():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER], stdout=subprocess.PIPE, env=env,
                               start_new_session=True, text=True)
    try:
        pids = [int(p) for p in trainer.stdout.readline().split()]
        assert len(pids) == 3  # two workers and the spare
        for pid in pids:  # each in its own process group, not the trainer's
            assert os.getpgid(pid) == pid != os.getpgid(trainer.pid)
        # A worker is deep in a power it would compute for minutes (the pool pipelines both pairs to
        # one worker; the other and the spare wait idle: all three must die with the trainer).
        wait_busy(pids[:2], every=False)
        assert all(running(pid) for pid in pids)
        os.kill(trainer.pid, signal.SIGKILL)
        trainer.wait(timeout=10)
        deadline = time.monotonic() + 5.0
        while any(running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(running(pid) for pid in pids)
    finally:
        if trainer.poll() is None:
            os.killpg(trainer.pid, signal.SIGKILL)
            trainer.wait()


def test_workers_started_from_a_short_lived_thread_survive_it():
    """The parent-death signal follows the thread that started a process, so the pool starts its
    workers from one long-lived thread: grading from a thread that then ends keeps them."""
    with Grader(timeout_s=20.0) as g:
        thread = threading.Thread(target=lambda: g.start(wait=True))
        thread.start()
        thread.join()
        pids = g.worker_pids()
        # Once the kernel has released the thread, any parent-death signal has been sent; a worker
        # it killed could not answer the grade below, and its replacement would change the pids.
        wait_until(lambda: thread_gone(thread.native_id), 30.0, "the starting thread released")
        assert pids and all(running(pid) for pid in pids)
        assert g.grade(["\\boxed{x = 3}"], ["3"]).correct == [True] and g.worker_pids() == pids
