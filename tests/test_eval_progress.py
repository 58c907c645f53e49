"""`aent eval` progress outside a terminal: a plain line at every 5% of the problems and, while a long
batch is generated, at least every heartbeat; generation tokens/s in the result, the summary and MLflow."""
import io
import time
from types import SimpleNamespace

from rich.console import Console

from aent_cli.eval.progress import EvalProgress
from aent_cli.eval.recording import summary_table
from aent_cli.eval.runner import evaluate_problems
from aent_cli.rollout.base import Completion, PromptCompletions, SamplingParams


class TokenBackend:
    """Each prompt gets n completions of 3 tokens, reported step by step through `on_tokens`;
    `wait_for` (a callable) holds a batch until it returns True (or 10 s pass)."""

    def __init__(self, wait_for=None):
        self.on_tokens, self.wait_for = None, wait_for

    def generate(self, prompts, params):
        for _ in range(3):
            if self.on_tokens is not None:
                self.on_tokens(len(prompts) * params.n)
        deadline = time.monotonic() + 10
        while self.wait_for is not None and not self.wait_for() and time.monotonic() < deadline:
            time.sleep(0.01)
        return [PromptCompletions(p, [1], [Completion("\\boxed{1}", [5, 6, 7], True) for _ in range(params.n)])
                for p in prompts]


class Grader:
    def grade(self, responses, answers):
        correct = [a == "1" for a in answers]
        return SimpleNamespace(correct=correct, extracted=["1"] * len(responses), timeouts=0, errors=0)


def _problems(count):
    return [SimpleNamespace(id=str(i), answer=str(i % 2)) for i in range(count)], [f"q{i}" for i in range(count)]


def test_a_line_every_five_percent():
    out = io.StringIO()
    console = Console(file=out, width=200)
    assert not console.is_terminal
    problems, prompts = _problems(40)
    backend = TokenBackend()
    with EvalProgress(console, heartbeat_s=3600) as progress:
        with progress.bench("tiny · math500", 40, 2, 3, 1) as counter:
            backend.on_tokens = counter.tokens
            result = evaluate_problems(backend, problems, prompts, SamplingParams(n=2), Grader(), batch_size=1,
                                       on_progress=counter.problems_done)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 20  # 40 problems, one line per 2
    assert lines[0].startswith("eval tiny · math500  2/40 problems  4/80 samples  12 tokens")
    assert "40/40 problems  80/80 samples  240 tokens" in lines[-1] and "ETA 0s" in lines[-1]
    assert result.perf["gen_tokens"] == 240 and result.perf["gen_tokens_per_s"] > 0
    assert set(result.perf) == {"gen_s", "gen_tokens", "gen_tokens_per_s", "grade_s"}
    info = summary_table({"math500": result}).rows[0].info
    assert float(info["tok/s"]) > 0


def test_heartbeat_lines_while_a_batch_is_generated():
    out = io.StringIO()
    console = Console(file=out, width=200)
    problems, prompts = _problems(4)
    backend = TokenBackend(wait_for=lambda: out.getvalue().count("\n") >= 2)  # two heartbeats before it returns
    with EvalProgress(console, heartbeat_s=0.05) as progress:
        with progress.bench("m · b", 4, 2, 16, 64) as counter:
            backend.on_tokens = counter.tokens
            evaluate_problems(backend, problems, prompts, SamplingParams(n=2), Grader(), batch_size=64,
                              on_progress=counter.problems_done)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) >= 3
    assert lines[0].startswith("eval m · b  0/4 problems  0/8 samples  24 tokens")
    assert "ETA <=" in lines[0]  # the bound from the decoding steps left (3 of 16 done)
    assert "4/4 problems  8/8 samples" in lines[-1]


def test_silent_without_a_console():
    problems, prompts = _problems(3)
    backend = TokenBackend()
    with EvalProgress(None) as progress:
        with progress.bench("x", 3, 2, 3, 2) as counter:
            backend.on_tokens = counter.tokens
            evaluate_problems(backend, problems, prompts, SamplingParams(n=2), Grader(), batch_size=2,
                              on_progress=counter.problems_done)
    assert counter.done == 3 and counter.generated == 18
