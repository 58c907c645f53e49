import json
import os
import random
import signal
import threading
import time

import pytest

from aent_cli.config import compose_config, validate
from aent_cli.rewards import Grader, default_grader, extract_answer, math_reward
from aent_cli.rewards.fastpath import quick_verdict
from aent_cli.rewards.pool import VerifierPool
from proc_wait import wait_busy

PATHOLOGICAL = "\\boxed{9^{9^{9^{9^{9}}}}}"  # sympy would compute a ~370-million-digit power


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def grader():
    with Grader(timeout_s=5.0, workers=1) as g:  # the `auto` extractor, as math_reward and aent eval
        g.start(wait=True)
        yield g
    assert not any(_alive(pid) for pid in g.worker_pids())


def _benchmark_answers(shared_data, per_file=40, seed=0):
    rng = random.Random(seed)
    answers = []
    for path in sorted((shared_data / "benchmarks").glob("*.jsonl")):
        rows = [json.loads(line)["answer"] for line in path.read_text().splitlines() if line.strip()]
        answers += rng.sample(rows, min(per_file, len(rows)))
    return answers


# ---- extraction ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,strict,auto", [
    ("The answer is 5", None, "5"),  # a stated final answer: no box, so nothing in strict mode
    ("**58**", None, "58"),
    ("\\boxed{2}, \\boxed{7}", "7", "2, 7"),  # strict: the last box; auto: the boxes that form the answer
    ("\\boxed{3} or \\boxed{5}", "5", "5"),  # "or" joins no list
    ("It is 3 or 5.", None, None),  # a hedge is no answer
    ("\\boxed{\\boxed{5}}", "5", "5"),
    ("\\boxed{}", None, None),
    ("\\boxed{4} and a cut-off \\boxed{\\frac{1}{", "4", "4"),
])
def test_extract_strict_and_auto(text, strict, auto):
    assert extract_answer(text, "strict") == strict and extract_answer(text, "auto") == auto


@pytest.mark.parametrize("text,expected", [
    ("so \\boxed{5}.", "5"),
    ("first \\boxed{1}, then \\boxed{2}", "2"),
    ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not close the box
    ("\\boxed{\\left\\{ x \\right\\}}", "\\left\\{ x \\right\\}"),
    ("$\\boxed 7$ done", "7"),
    ("\\fbox{3}", "3"),
    ("\\boxed{4} and a cut-off \\boxed{\\frac{1}{", "4"),  # truncated last box: the earlier one
    ("\\boxed{}", None),
    ("0.5", "0.5"),
    ("$\\frac12$", "\\frac12"),
    ("  x = 3 ", "x = 3"),
    ("\\text{(C)}", "\\text{(C)}"),
    ("line one\nline two 5", None),
    ("", None),
])
def test_extract_auto(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("47+8*6=95", "95"), ("it is -3.5 or maybe 1,234", "1234"), ("3/4", "3/4"), ("no digits", None),
])
def test_extract_last_number(text, expected):
    assert extract_answer(text, "last_number") == expected


def test_unknown_extractor():
    with pytest.raises(ValueError, match="extractor"):
        extract_answer("1", "first_word")
    with pytest.raises(ValueError, match="extractor"):
        Grader(extractor="first_word")


@pytest.mark.parametrize("pred,ref,expected", [
    ("12", "12", True), ("\\dfrac{1}{2}", "\\frac{1}{2}", True), ("\\left( 1,2 \\right)", "(1,2)", True),
    ("012", "12", True), ("-0", "0", True), ("12", "13", False), ("-12", "12", False),
    ("0.50", ".5", True), ("5", "5.0", True), ("2.5", "2.6", False), ("7" * 5000, "7" * 5000 + "1", False),
    ("0.5001", "0.5", None),  # close decimals: math-verify's rounding decides
    ("1/2", "0.5", None), ("x=3", "3", None), ("1,000", "1000", None),
])
def test_quick_verdict(pred, ref, expected):
    assert quick_verdict(pred, ref) is expected


# ---- equivalence ----------------------------------------------------------------------------------

EQUIVALENT = [
    ("\\boxed{0.5}", "\\frac{1}{2}"), ("0.5", "\\frac{1}{2}"), ("1/2", "\\frac{1}{2}"),
    ("$\\frac12$", "\\frac{1}{2}"), ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{10}", "10\\%"), ("\\boxed{10\\%}", "10\\%"), ("\\boxed{(1, 2)}", "(1,2)"),
    ("\\boxed{C}", "\\text{(C)}"), ("\\boxed{(C)}", "\\text{(C)}"), ("\\boxed{1+x^2}", "x^2+1"),
    ("\\boxed{18.90}", "\\$18.90"), ("\\boxed{\\$18.9}", "\\$18.90"), ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}"),
    ("\\boxed{x=3}", "3"), ("\\boxed{90}", "90^\\circ"),
    ("\\boxed{\\begin{pmatrix} 3 \\\\ 1 \\end{pmatrix}}", "\\begin{pmatrix}3\\\\1\\end{pmatrix}"),
]
WRONG = [
    ("\\boxed{0.6}", "\\frac{1}{2}"), ("\\boxed{(2,1)}", "(1,2)"), ("\\boxed{D}", "\\text{(C)}"),
    ("\\boxed{x^2-1}", "x^2+1"), ("\\boxed{2\\sqrt{3}}", "2\\sqrt{2}"), ("\\boxed{-5}", "5"),
    ("The answer is 6", "5"), ("no answer at all", "5"), ("\\boxed{5", "5"),
]


@pytest.mark.parametrize("response,answer", EQUIVALENT)
def test_equivalent_forms_match(grader, response, answer):
    batch = grader.grade([response], [answer])
    assert batch.correct == [True] and batch.rewards == [1.0] and batch.timeouts == batch.errors == 0


@pytest.mark.parametrize("response,answer", WRONG)
def test_wrong_answers_do_not_match(grader, response, answer):
    batch = grader.grade([response], [answer])
    assert batch.correct == [False] and batch.rewards == [0.0]


def test_math_reward_public_function():
    try:
        default_grader().start(wait=True)  # the time limit covers start-up: keep it out of this test
        assert math_reward("The answer is $\\frac{1}{2}$.", "0.5") == 1.0  # `auto`, as aent eval
        assert math_reward("Thus \\boxed{\\frac{1}{2}}.", "0.5") == 1.0
        assert math_reward("0.5", "\\frac{1}{2}") == 1.0
        assert math_reward("\\boxed{3}", "4") == 0.0
        assert math_reward("\\boxed{1}", 1) == 1.0 and math_reward("\\boxed{0.5}", 0.5) == 1.0  # a number: its str()
        for response, answer in (("\\boxed{x}", None), (None, "1"), ("\\boxed{1}", ["1"])):
            with pytest.raises(TypeError, match="takes text"):
                math_reward(response, answer)
    finally:
        pids = default_grader().worker_pids()
        default_grader().close()
    assert pids and not any(_alive(p) for p in pids)


def test_reference_answers_verify_against_themselves(shared_data):
    """Every sampled reference answer, through extraction and the full math-verify path (the
    grader's string fast path would make this trivially true, so the pool is called directly)."""
    answers = _benchmark_answers(shared_data)
    assert all(extract_answer("... so \\boxed{" + a + "}.") == a for a in answers)
    pool = VerifierPool(2, timeout_s=10.0)
    try:
        pool.start(wait=True)
        outcomes = pool.run([(a, a) for a in answers])
    finally:
        pool.close()
    failed = [a for a, o in zip(answers, outcomes) if not (o.equivalent and o.status == "ok")]
    assert failed == [], failed


def test_other_reference_answers_are_wrong(shared_data, grader):
    answers = _benchmark_answers(shared_data, per_file=25, seed=1)
    shuffled = answers[1:] + answers[:1]
    pairs = [(a, b) for a, b in zip(answers, shuffled) if a.replace(" ", "") != b.replace(" ", "")]
    batch = grader.grade(["\\boxed{" + a + "}" for a, _ in pairs], [b for _, b in pairs])
    assert sum(batch.correct) == 0 and batch.timeouts == 0


# ---- batching, caching, rewards -------------------------------------------------------------------

def test_batch_rewards_fast_path_and_cache():
    with Grader(correct=1.0, format_reward=0.1, timeout_s=5.0) as g:
        fast = g.grade(["\\boxed{ 12 }", "\\boxed{\\dfrac{1}{2}}"], ["12", "\\frac{1}{2}"])
        assert fast.correct == [True, True] and fast.verified == 0
        assert g.worker_pids() == []  # string-equal answers never start a worker
        g.start(wait=True)  # start-up counts against the time limit: keep it out of this test

        group = ["\\boxed{0.5}"] * 12 + ["\\boxed{0.25}"] * 3 + ["no answer"]
        batch = g.grade(group, ["\\frac{1}{2}"] * 16)
        assert batch.verified == 2  # one math-verify check per distinct (answer, reference) pair
        assert batch.rewards == pytest.approx([1.1] * 12 + [0.1] * 3 + [0.0])
        assert batch.extracted[-1] is None and batch.accuracy == pytest.approx(12 / 16)
        again = g.grade(["\\boxed{0.5}"], ["\\frac{1}{2}"])
        assert again.correct == [True] and again.verified == 0  # verdict cached across batches


def test_from_config():
    cfg = validate(compose_config(["reward.timeout_s=2.5", "reward.format_reward=0.1"]))
    g = Grader.from_config(cfg.reward)
    assert (g.extractor, g.timeout_s, g.format_reward) == ("strict", 2.5, 0.1)  # training's default
    assert Grader.from_config(cfg.reward, default_extractor="auto").extractor == "auto"  # eval's
    cfg = validate(compose_config(["reward.extractor=last_number", "reward.percent=number"]))
    assert (Grader.from_config(cfg.reward, "auto").extractor, Grader.from_config(cfg.reward).percent) == (
        "last_number", "number")
    g.close()


def test_pathological_answer_times_out_and_grader_recovers():
    timeout_s = 1.0
    with Grader(timeout_s=timeout_s, workers=1) as g:
        g.start(wait=True)  # start the worker outside the timed part
        (old_pid,) = g.worker_pids()
        start = time.monotonic()
        batch = g.grade([PATHOLOGICAL, PATHOLOGICAL, "\\boxed{1}"], ["1", "1", "1"])
        elapsed = time.monotonic() - start
        assert batch.correct == [False, False, True]
        assert batch.timeouts == 2 and batch.statuses == ["timeout", "timeout", "ok"]
        assert batch.verified == 1  # the repeated pathological pair ran once
        assert timeout_s <= elapsed < timeout_s + 3.0
        assert not _alive(old_pid) and g.worker_pids() != [old_pid]  # killed and replaced
        after = g.grade(["\\boxed{0.25}"], ["\\frac14"])
        assert after.correct == [True] and after.timeouts == 0
        pids = g.worker_pids()
    assert not any(_alive(p) for p in pids)


def test_worker_crash_scores_error_and_grader_recovers():
    with Grader(timeout_s=60.0, workers=1) as g:
        g.grade(["\\boxed{0.5}"], ["\\frac{1}{2}"])
        (pid,) = g.worker_pids()
        result = {}
        thread = threading.Thread(target=lambda: result.update(b=g.grade([PATHOLOGICAL], ["1"])))
        start = time.monotonic()
        thread.start()  # grading from a non-main thread is supported
        wait_busy([pid])  # the worker has taken the pathological pair and is computing it
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=10)
        assert not thread.is_alive() and time.monotonic() - start < 10
        assert result["b"].errors == 1 and result["b"].correct == [False]
        assert g.grade(["\\boxed{0.5}"], ["1/2"]).correct == [True]


def test_pool_discards_a_task_left_in_flight_by_an_interrupted_run():
    pool = VerifierPool(1, timeout_s=30.0)
    try:
        assert pool.run([("1/2", "0.5")])[0].equivalent
        # As if a run was interrupted (Ctrl-C) while its worker was stuck on this task.
        pool._workers[0].send(0, "9^{9^{9^{9^{9}}}}", "1", time.monotonic() + 30.0)
        start = time.monotonic()
        (outcome,) = pool.run([("1/3", "\\frac{1}{3}")])
        assert outcome.equivalent and outcome.status == "ok" and time.monotonic() - start < 10
    finally:
        pool.close()
