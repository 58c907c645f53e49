"""avg@k, pass@k and maj@k on fixed fake generations with known scores, and the runner on a fake backend."""
from itertools import combinations
from types import SimpleNamespace

import pytest

from aent_cli.eval.runner import evaluate_problems
from aent_cli.eval.scores import bench_scores, majority_index, normalize_answer, pass_at_k
from aent_cli.rollout.base import Completion, PromptCompletions, SamplingParams


def brute_force_pass_at_k(flags, k):
    """Fraction of all k-subsets of the samples that contain a correct one (the estimator's definition)."""
    subsets = list(combinations(flags, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        flags = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(flags, k))


def test_pass_at_k_rejects_bad_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 2)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_scores_on_fixed_generations():
    # 3 problems x 4 samples. Problem 1: 2/4 right, majority "5" is right. Problem 2: 1/4 right,
    # majority "7" (wrong, 2 votes) beats "8" (right, 1 vote). Problem 3: 0/4, nothing extracted.
    correct = [[True, False, True, False], [False, True, False, False], [False] * 4]
    extracted = [["5", "6", "5.0", None], ["7", "8", "7", "9"], [None] * 4]
    scores = bench_scores(correct, extracted)
    assert scores == {"avg@4": pytest.approx(3 / 12), "pass@4": pytest.approx(2 / 3), "maj@4": pytest.approx(1 / 3)}


def test_pass_at_smaller_k_uses_the_unbiased_estimator():
    correct = [[True, False, False, False], [True, True, False, False]]
    scores = bench_scores(correct, [[None] * 4] * 2, k=2)
    # problem 1: 1 - C(3,2)/C(4,2) = 1/2; problem 2: 1 - C(2,2)/C(4,2) = 5/6
    assert scores["pass@2"] == pytest.approx((1 / 2 + 5 / 6) / 2)


def test_majority_ties_go_to_the_first_answer():
    assert majority_index(["3", "4", "4", "3"]) == 0
    assert majority_index(["4", "3", "3", "4"]) == 0
    assert majority_index([None, "x", None, "y", "y"]) == 3
    assert majority_index([None, None]) is None


@pytest.mark.parametrize("a,b", [("\\dfrac{1}{2}", "\\frac{1}{2}"), ("0.50", "0.5"), ("1,000", "1000"),
                                 ("$12$", "12"), ("\\text{(B)}", "(B)"), ("90^\\circ", "90"), ("5.", "5"),
                                 ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})")])
def test_equivalent_spellings_vote_together(a, b):
    assert normalize_answer(a) == normalize_answer(b)


@pytest.mark.parametrize("a,b", [("1,2", "12"), ("2", "3"), ("x+1", "x-1")])
def test_different_answers_stay_apart(a, b):
    assert normalize_answer(a) != normalize_answer(b)


class FakeBackend:
    """Replays fixed completions, checking it is asked for what the runner should ask."""

    def __init__(self, table):
        self.table = table
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append(list(prompts))
        return [PromptCompletions(p, [0], [Completion(text, [1] * (i + 1), finished=i != 0)
                                           for i, text in enumerate(self.table[p][:params.n])]) for p in prompts]


class FakeGrader:
    """Exact-match grader over \\boxed{...}: independent of the math grader, enough for the runner's bookkeeping."""

    def grade(self, responses, answers):
        extracted = [r.split("\\boxed{")[1].rstrip("}") if "\\boxed{" in r else None for r in responses]
        correct = [e == a for e, a in zip(extracted, answers)]
        return SimpleNamespace(rewards=[float(c) for c in correct], correct=correct, extracted=extracted,
                               timeouts=1, errors=0)


def test_runner_batches_grades_and_scores():
    problems = [SimpleNamespace(id=f"p{i}", answer=str(i)) for i in range(3)]
    prompts = ["q0", "q1", "q2"]
    table = {"q0": ["\\boxed{0}", "\\boxed{0}"], "q1": ["\\boxed{2}", "\\boxed{1}"], "q2": ["none", "\\boxed{9}"]}
    backend, done = FakeBackend(table), []
    result = evaluate_problems(backend, problems, prompts, SamplingParams(n=2), FakeGrader(), batch_size=2,
                               on_progress=done.append)
    assert backend.calls == [["q0", "q1"], ["q2"]] and done == [2, 1]
    assert result.k == 2 and result.timeouts == 2
    assert result.scores == {"avg@2": pytest.approx(3 / 6), "pass@2": pytest.approx(2 / 3),
                             "maj@2": pytest.approx(1 / 3)}
    assert [p.correct for p in result.problems] == [[True, True], [False, True], [False, False]]
    assert result.problems[2].extracted == [None, "9"] and result.problems[1].majority == "2"
    assert result.stats == {"response_length": pytest.approx(1.5), "truncated": pytest.approx(0.5)}
    metrics = result.metrics("eval/x")
    assert metrics["eval/x/avg_at_2"] == pytest.approx(0.5) and metrics["eval/x/timeouts"] == 2
