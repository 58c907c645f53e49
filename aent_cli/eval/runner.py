"""Sample k answers per problem, grade them, score the benchmark. Shared by `aent eval` and the
trainer's periodic validation, so `val/acc` and `eval/<bench>/avg_at_<k>` are one computation."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from aent_cli.eval.scores import bench_scores, majority_index, metric_name
from aent_cli.rollout.base import SamplingParams


@dataclass
class ProblemResult:
    id: str
    answer: str  # the reference
    responses: List[str]
    extracted: List[Optional[str]]
    correct: List[bool]
    response_tokens: List[int]
    truncated: List[bool]  # cut at max_new_tokens instead of stopping by itself

    @property
    def majority(self) -> Optional[str]:
        index = majority_index(self.extracted)
        return None if index is None else self.extracted[index]

    def as_row(self) -> Dict[str, object]:
        return {"id": self.id, "answer": self.answer, "extracted": self.extracted, "correct": self.correct,
                "majority": self.majority, "n_correct": sum(self.correct), "response_tokens": self.response_tokens,
                "truncated": self.truncated, "responses": self.responses}


@dataclass
class BenchResult:
    k: int
    problems: List[ProblemResult]
    scores: Dict[str, float]  # {"avg@k", "pass@k", "maj@k"} with the real k
    timeouts: int = 0  # answers whose grading hit reward.timeout_s (scored wrong)
    errors: int = 0  # answers the verifier failed on (scored wrong)
    stats: Dict[str, float] = field(default_factory=dict)  # response_length, truncated fraction
    # generation and grading cost: gen_s, gen_tokens, gen_tokens_per_s, grade_s (seconds, tokens)
    perf: Dict[str, float] = field(default_factory=dict)

    def metrics(self, prefix: str) -> Dict[str, float]:
        """Flat MLflow metrics under `prefix` (e.g. `eval/math500/avg_at_4`)."""
        out = {f"{prefix}/{metric_name(name)}": value for name, value in self.scores.items()}
        out.update({f"{prefix}/{name}": value for name, value in self.stats.items()})
        out[f"{prefix}/timeouts"] = float(self.timeouts)
        out[f"{prefix}/grade_errors"] = float(self.errors)
        out[f"{prefix}/problems"] = float(len(self.problems))
        return out


def evaluate_problems(backend, problems: Sequence, prompts: Sequence[str], params: SamplingParams, grader,
                      batch_size: int = 64,
                      on_progress: Optional[Callable[[int], None]] = None) -> BenchResult:
    """Generate `params.n` completions for every prompt (in batches of `batch_size` prompts), grade
    them against each problem's reference with `grader`, and score avg@n / pass@n / maj@n.

    `problems[i].answer` is the reference for `prompts[i]`; `on_progress(done)` is called after each
    batch with the number of problems finished in it (for progress bars)."""
    if len(problems) != len(prompts):
        raise ValueError(f"{len(problems)} problems but {len(prompts)} prompts")
    if not problems:
        raise ValueError("no problems to evaluate")
    n = params.n
    results: List[ProblemResult] = []
    timeouts = errors = 0
    gen_s = grade_s = 0.0
    for start in range(0, len(prompts), batch_size):
        batch_problems = problems[start:start + batch_size]
        began = time.perf_counter()
        generated = backend.generate(list(prompts[start:start + batch_size]), params)
        gen_s += time.perf_counter() - began
        if len(generated) != len(batch_problems):
            raise RuntimeError(f"rollout returned {len(generated)} prompt groups for {len(batch_problems)} prompts")
        texts = [c.text for group in generated for c in group.completions]
        references = [p.answer for p, group in zip(batch_problems, generated) for _ in group.completions]
        began = time.perf_counter()
        graded = grader.grade(texts, references)
        grade_s += time.perf_counter() - began
        timeouts += graded.timeouts
        errors += graded.errors
        offset = 0
        for problem, group in zip(batch_problems, generated):
            if len(group.completions) != n:
                raise RuntimeError(f"rollout returned {len(group.completions)} completions, asked for {n}")
            span = slice(offset, offset + n)
            offset += n
            results.append(ProblemResult(
                id=str(problem.id), answer=str(problem.answer),
                responses=[c.text for c in group.completions],
                extracted=list(graded.extracted[span]),
                correct=[bool(c) for c in graded.correct[span]],
                response_tokens=[len(c.token_ids) for c in group.completions],
                truncated=[not c.finished for c in group.completions]))
        if on_progress is not None:
            on_progress(len(batch_problems))
    scores = bench_scores([r.correct for r in results], [r.extracted for r in results])
    samples = len(results) * n
    stats = {"response_length": sum(sum(r.response_tokens) for r in results) / samples,
             "truncated": sum(sum(r.truncated) for r in results) / samples}
    tokens = sum(sum(r.response_tokens) for r in results)
    perf = {"gen_s": gen_s, "gen_tokens": float(tokens), "gen_tokens_per_s": tokens / gen_s if gen_s > 0 else 0.0,
            "grade_s": grade_s}
    return BenchResult(k=n, problems=results, scores=scores, timeouts=timeouts, errors=errors, stats=stats,
                       perf=perf)
