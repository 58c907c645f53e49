"""Grading throughput and the time limit, on real benchmark answers.

    python benchmarks/reward_grading.py [--data DIR] [--batch 512] [--workers 1 2]

Builds a batch of responses from the shared benchmark answers: a third boxed exactly as the
reference (string fast path), a third in an equivalent spelling that needs math-verify
(`x = 3`, `\\displaystyle ...`), a third wrong (another problem's answer). Two layouts: every
response distinct (worst case), and GRPO-like groups of 16 responses over 4 distinct answers.
Prints answers/s per worker count, then the wall time of a pathological answer against its limit.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from aent_cli.rewards import Grader

PATHOLOGICAL = "\\boxed{9^{9^{9^{9^{9}}}}}"


def load_answers(data_dir: Path) -> list[str]:
    answers = []
    for path in sorted((data_dir / "benchmarks").glob("*.jsonl")):
        answers += [json.loads(line)["answer"] for line in path.read_text().splitlines() if line.strip()]
    return answers


def respond(answer: str, kind: str, other: str) -> str:
    if kind == "exact":
        boxed = answer
    elif kind == "equivalent":
        boxed = f"x = {answer}" if answer.lstrip("-").isdigit() else "\\displaystyle " + answer
    else:
        boxed = other
    return "Let me think step by step. ... Therefore the final answer is $\\boxed{" + boxed + "}$."


def distinct_batch(answers, size, rng):
    refs = rng.sample(answers, size)
    kinds = [("exact", "equivalent", "wrong")[i % 3] for i in range(size)]
    return [respond(a, k, rng.choice(answers)) for a, k in zip(refs, kinds)], refs, kinds


def grouped_batch(answers, size, rng, group=16):
    responses, refs, kinds = [], [], []
    for ref in rng.sample(answers, size // group):
        variants = [respond(ref, "exact", ""), respond(ref, "equivalent", ""),
                    respond(ref, "wrong", rng.choice(answers)), respond(ref, "wrong", rng.choice(answers))]
        for j in range(group):
            v = j % 4
            responses.append(variants[v])
            refs.append(ref)
            kinds.append(("exact", "equivalent", "wrong", "wrong")[v])
    return responses, refs, kinds


def measure(responses, refs, kinds, workers, timeout_s):
    with Grader(timeout_s=timeout_s, workers=workers) as grader:
        grader.grade(["\\boxed{0.5}"], ["\\frac{1}{2}"])  # start the workers outside the timing
        start = time.perf_counter()
        batch = grader.grade(responses, refs)
        seconds = time.perf_counter() - start
    want = [k != "wrong" for k in kinds]
    agree = sum(c == w for c, w in zip(batch.correct, want)) / len(want)
    return seconds, batch, agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("AENT_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")))
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    answers = load_answers(args.data)
    rng = random.Random(0)
    layouts = {"distinct": distinct_batch(answers, args.batch, rng), "grouped16": grouped_batch(answers, args.batch, rng)}
    print(f"{len(answers)} benchmark answers; batch {args.batch}; cpu cores {os.cpu_count()}")
    for name, (responses, refs, kinds) in layouts.items():
        for workers in args.workers:
            seconds, batch, agree = measure(responses, refs, kinds, workers, args.timeout)
            print(f"{name:10s} workers={workers}: {len(responses) / seconds:8.1f} answers/s "
                  f"({seconds:.2f} s; math-verify checks {batch.verified}; accuracy {batch.accuracy:.3f}; "
                  f"agrees with intended right/wrong {agree:.4f}; timeouts {batch.timeouts}; errors {batch.errors})")

    for timeout_s in (1.0, args.timeout):
        with Grader(timeout_s=timeout_s, workers=1) as grader:
            grader.grade(["\\boxed{0.5}"], ["\\frac{1}{2}"])
            start = time.perf_counter()
            batch = grader.grade([PATHOLOGICAL], ["1"])
            first = time.perf_counter() - start
            start = time.perf_counter()
            after = grader.grade(["\\boxed{0.25}"], ["\\frac14"])
            recover = time.perf_counter() - start
        print(f"pathological {PATHOLOGICAL} vs 1, timeout_s={timeout_s:g}: {first:.2f} s wall, "
              f"timeouts={batch.timeouts}, reward={batch.rewards[0]}; next batch (worker restart) "
              f"{recover:.2f} s, correct={after.correct[0]}")


if __name__ == "__main__":
    main()
