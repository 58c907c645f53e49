"""aent's grader against plain math-verify on the same 1,000 real-looking responses.

    python benchmarks/bench_grading.py [--data DIR] [--n 1000] [--rounds 2] [--seed 0]

Responses are built from the shared benchmark rows: a reasoning prefix (the start of the row's
own solution, its boxes unwrapped) and a final answer written the way models write it: boxed as
the reference, boxed in an equivalent spelling, boxed wrong (another row's answer), stated
without a box ("The answer is $X$.", a closing display, **X**), a list of boxes, a hedge between
two candidates, or cut off before the answer. Each style says what the right grade is.

Prints answers/s for math-verify (`verify(parse("$" + gold + "$"), parse(response))`, in this
process, its own timeouts), aent `auto` and aent `strict` (`Grader.grade` on the whole batch, one
grading process, started before the clock; a fresh grader each round so no verdict is cached),
measured interleaved in one run so they share the machine's load; then the agreement of `auto`
and `strict` with math-verify, and each grader's accuracy against the right grades, per style.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

from math_verify import parse, verify

from aent_cli.rewards import Grader

logging.getLogger("math_verify").setLevel(logging.CRITICAL)
STYLES = ("boxed", "boxed_equivalent", "boxed_wrong", "stated", "display", "bold", "two_boxes", "hedge",
          "cut_off")
RIGHT_STYLES = {"boxed", "boxed_equivalent", "stated", "display", "bold", "two_boxes"}
_BOX = re.compile(r"\\boxed\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")


def load_rows(data_dir: Path):
    rows = []
    for path in sorted((data_dir / "benchmarks").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def prefix(row, rng) -> str:
    solution = _BOX.sub(r"\1", row.get("solution") or row["problem"])
    cut = rng.randint(200, 700)
    return "Let's solve this step by step.\n\n" + solution[:cut].rsplit(" ", 1)[0] + "\n\n"


def equivalent(answer: str) -> str:
    """Another spelling of the same answer."""
    if re.fullmatch(r"-?\d+", answer):
        return f"x = {answer}"
    if "\\frac" in answer:
        return answer.replace("\\frac", "\\dfrac")
    return "\\displaystyle " + answer


def respond(row, style, other, rng) -> str:
    a, start = row["answer"], prefix(row, rng)
    if style == "boxed":
        return start + f"Therefore, the final answer is $\\boxed{{{a}}}$."
    if style == "boxed_equivalent":
        return start + f"So we get $\\boxed{{{equivalent(a)}}}$."
    if style == "boxed_wrong":
        return start + f"Therefore, the final answer is $\\boxed{{{other}}}$."
    if style == "stated":
        return start + f"The answer is ${a}$."
    if style == "display":
        return start + f"Putting it together:\n\\[ {a} \\]"
    if style == "bold":
        return start + f"**Final Answer:** **{a}**" if rng.random() < 0.5 else f"**{a}**"
    if style == "two_boxes":
        return start + f"First, $\\boxed{{{other}}}$ is not allowed. The answer is $\\boxed{{{a}}}$."
    if style == "hedge":
        pair = (a, other) if rng.random() < 0.5 else (other, a)
        return start + f"The answer is ${pair[0]}$ or ${pair[1]}$."
    return start  # cut_off: the generation ended before any answer


def build(rows, n, seed):
    rng = random.Random(seed)
    picked = rng.sample(rows, n)
    responses, golds, styles = [], [], []
    for i, row in enumerate(picked):
        style = STYLES[i % len(STYLES)]
        other = rng.choice(rows)["answer"]
        while other.replace(" ", "") == row["answer"].replace(" ", ""):
            other = rng.choice(rows)["answer"]
        responses.append(respond(row, style, other, rng))
        golds.append(row["answer"])
        styles.append(style)
    return responses, golds, styles


def math_verify_grades(responses, golds):
    out = []
    for response, gold in zip(responses, golds):
        try:
            out.append(bool(verify(parse("$" + gold + "$"), parse(response))))
        except Exception:  # noqa: BLE001 - a crash grades 0, as it would in a reward function
            out.append(False)
    return out


def aent_grades(responses, golds, extractor):
    with Grader(extractor=extractor, timeout_s=10.0, workers=1) as grader:
        grader.start(wait=True)  # start-up is not grading: keep it off the clock
        start = time.perf_counter()
        batch = grader.grade(responses, golds)
        return batch.correct, time.perf_counter() - start, batch.timeouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("AENT_DATA_DIR", "../shared/data")))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    responses, golds, styles = build(load_rows(args.data), args.n, args.seed)
    print(f"{len(responses)} responses, styles: {dict(Counter(styles))}")
    seconds, grades, timeouts = defaultdict(list), {}, Counter()
    for r in range(args.rounds):
        for name in ("math-verify", "auto", "strict") if r % 2 == 0 else ("strict", "auto", "math-verify"):
            if name == "math-verify":
                start = time.perf_counter()
                grades[name] = math_verify_grades(responses, golds)
                seconds[name].append(time.perf_counter() - start)
            else:
                grades[name], s, t = aent_grades(responses, golds, name)
                seconds[name].append(s)
                timeouts[name] += t
    print(f"\nthroughput over {args.rounds} interleaved rounds (best round; all rounds in brackets):")
    for name in ("math-verify", "auto", "strict"):
        best = min(seconds[name])
        runs = ", ".join(f"{len(responses) / s:.0f}" for s in seconds[name])
        print(f"  {name:12s} {len(responses) / best:8.0f} answers/s  [{runs}]  timeouts {timeouts[name]}")
    ratio = min(seconds["auto"]) / min(seconds["math-verify"])
    print(f"  aent auto takes {ratio:.2f}x math-verify's time")
    mv = grades["math-verify"]
    print("\nagreement with plain math-verify:")
    for name in ("auto", "strict"):
        same = sum(a == b for a, b in zip(grades[name], mv))
        print(f"  {name:7s} {same}/{len(mv)} = {same / len(mv):.1%}")
    print("\naccuracy against the right grade, per style (right = " + ", ".join(sorted(RIGHT_STYLES)) + "):")
    print(f"  {'style':18s} {'math-verify':>12s} {'auto':>8s} {'strict':>8s}")
    for style in STYLES + ("all",):
        idx = [i for i, s in enumerate(styles) if style in ("all", s)]
        cells = []
        for name in ("math-verify", "auto", "strict"):
            ok = sum(grades[name][i] == (styles[i] in RIGHT_STYLES) for i in idx)
            cells.append(f"{ok / len(idx):.1%}")
        print(f"  {style:18s} {cells[0]:>12s} {cells[1]:>8s} {cells[2]:>8s}")


if __name__ == "__main__":
    main()
