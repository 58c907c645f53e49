"""`data=word_problems`: generated two-to-three-digit arithmetic word problems with \\boxed{} answers,
a task a small instruct model (SmolLM2-135M-Instruct) solves part of the time, so GRPO has both
right and wrong answers in a group from the first step (no download).

Each problem is one sentence of a story and a question (addition, subtraction, or a two-digit number
times a one-digit number); the reference answer is the integer. The held-out split comes from a fixed
seed and is excluded from the train draw, so val/acc measures unseen problems.
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Callable, FrozenSet, List, Tuple

from aent_cli.data.problem import Problem

SPEC = "word_problems"
TEST_SIZE = 512
_TEST_SEED = 515151
_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana", "Ivan", "Jo", "Kemi", "Leo")
_ITEMS = ("apples", "marbles", "stickers", "books", "coins", "pencils", "shells", "cards")


def _add(rng: random.Random, name: str, item: str) -> Tuple[str, int]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b


def _add3(rng: random.Random, name: str, item: str) -> Tuple[str, int]:
    a, b = rng.randint(100, 999), rng.randint(10, 99)
    return f"A box holds {a} {item}. {name} puts {b} more {item} in it. How many {item} are in the box?", a + b


def _sub(rng: random.Random, name: str, item: str) -> Tuple[str, int]:
    a = rng.randint(20, 99)
    b = rng.randint(10, a - 1)
    return f"{name} has {a} {item} and gives away {b}. How many {item} does {name} have left?", a - b


def _mul(rng: random.Random, name: str, item: str) -> Tuple[str, int]:
    a, b = rng.randint(2, 9), rng.randint(11, 99)
    return f"{name} has {a} bags with {b} {item} in each bag. How many {item} does {name} have?", a * b


KINDS: Tuple[Callable[[random.Random, str, str], Tuple[str, int]], ...] = (_add, _add3, _sub, _mul)


def make_problem(rng: random.Random) -> Tuple[str, int]:
    kind = rng.choice(KINDS)
    return kind(rng, rng.choice(_NAMES), rng.choice(_ITEMS))


def _draw(rng: random.Random, n: int, exclude: FrozenSet[str], split: str) -> List[Problem]:
    out, seen = [], set()
    while len(out) < n:
        text, answer = make_problem(rng)
        if text in exclude or text in seen:
            continue
        seen.add(text)
        out.append(Problem(id=f"word-{split}-{len(out)}", problem=text, answer=str(answer)))
    return out


@lru_cache(maxsize=1)
def _test() -> Tuple[Problem, ...]:
    return tuple(_draw(random.Random(_TEST_SEED), TEST_SIZE, frozenset(), "test"))


def word_problems(n: int, seed: int, split: str) -> List[Problem]:
    """`n` problems of a split: "test" (fixed, at most TEST_SIZE) or "train" (by seed, no test problem)."""
    if split == "test":
        if n > TEST_SIZE:
            raise ValueError(f"the word-problem test split has {TEST_SIZE} problems, {n} asked")
        return list(_test()[:n])
    if split != "train":
        raise ValueError(f"unknown split {split!r}: train or test")
    return _draw(random.Random(seed * 7919 + 17), n, frozenset(p.problem for p in _test()), "train")
