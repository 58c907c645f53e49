"""The embedded task: procedurally generated arithmetic whose answers go through the math reward.

Prompts are plain strings like "47+8*6=" and reference answers are integers; a correct response is
"\\boxed{95}". Difficulties are mixed so a small warm-started model is right on part of the
held-out set and RL has room: sums of one- and two-digit numbers (easy: mostly learned) and
a + b * c with two-digit a, b (hard: rarely learned by the small model). Small transformers learn the
sums through a sudden phase change that comes sooner on sums alone, so the warm start begins with them
(`hard_share=0`) before mixing in the hard problems.
The held-out (test) problems come from a fixed seed and are excluded from every train and
warm-start draw, so val/acc measures problems the model never trained on.
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import FrozenSet, List

from aent_cli.data.problem import Problem

TASK_VERSION = 3
HARD_SHARE = 0.3
TEST_SIZE = 512
_TEST_SEED = 424242


def make_problem(rng: random.Random, hard_share: float = HARD_SHARE) -> tuple[str, int]:
    u = rng.random()
    if u < hard_share:
        a, b, c = rng.randint(10, 99), rng.randint(10, 99), rng.randint(2, 9)
        return f"{a}+{b}*{c}=", a + b * c
    u = (u - hard_share) / (1.0 - hard_share)
    if u < 0.3:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
    elif u < 0.7:
        a, b = rng.randint(10, 99), rng.randint(0, 9)
    else:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"{a}+{b}=", a + b


def _draw(rng: random.Random, n: int, exclude: FrozenSet[str], unique: bool, split: str,
          hard_share: float = HARD_SHARE) -> List[Problem]:
    out, seen = [], set()
    while len(out) < n:
        prompt, answer = make_problem(rng, hard_share)
        if prompt in exclude or (unique and prompt in seen):
            continue
        seen.add(prompt)
        out.append(Problem(id=f"arith-{split}-{len(out)}", problem=prompt, answer=str(answer)))
    return out


@lru_cache(maxsize=1)
def test_problems() -> List[Problem]:
    return _draw(random.Random(_TEST_SEED), TEST_SIZE, frozenset(), unique=True, split="test")


@lru_cache(maxsize=1)
def _test_prompts() -> FrozenSet[str]:
    return frozenset(p.problem for p in test_problems())


def arithmetic_problems(n: int, seed: int, split: str, hard_share: float = HARD_SHARE) -> List[Problem]:
    """`n` problems of a split: "test" (fixed, at most TEST_SIZE), "train" or "warmstart" (by seed)."""
    if split == "test":
        if n > TEST_SIZE:
            raise ValueError(f"the arithmetic test split has {TEST_SIZE} problems, {n} asked")
        return test_problems()[:n]
    offset = {"train": 0, "warmstart": 1_000_003}[split]
    return _draw(random.Random(seed * 7919 + offset), n, _test_prompts(), unique=False, split=split,
                 hard_share=hard_share)


def boxed_response(answer: str) -> str:
    return "\\boxed{" + answer + "}"


def prose_response(answer: str) -> str:
    """The answer in words, "it is 95": right, but not in a form the reward reads (it takes the last
    \\boxed{} or a bare expression, never prose), so it scores 0."""
    return "it is " + answer
