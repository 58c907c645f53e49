"""`data=word_problems`: generated arithmetic problems with integer answers, at a difficulty a small
instruct model solves part of the time, so GRPO groups hold right and wrong answers from the first
step (no download).

`digits=1` (the default of conf/data/word_problems.yaml): "What is 4 + 7?" with one-digit operands.
`digits=2`: two-to-three-digit word problems, one sentence of a story and a question (addition,
subtraction, a two-digit number times a one-digit number). Measured on SmolLM2-135M-Instruct (the
Q4_1 weights of ../shared/models/smollm2.py), chat prompt, temperature 1, 48 new tokens, 24 samples:
digits=1 is right 21% of the time with `reward.extractor=last_number` (4% with `boxed`: it rarely
boxes); digits=2 0-8% even greedily (it cannot add two-digit numbers), too few for GRPO.
The held-out split comes from a fixed seed and is excluded from the train draw.
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Callable, FrozenSet, List, Tuple

from aent_cli.data.problem import Problem, draw_problems

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


def make_problem(rng: random.Random, digits: int = 1) -> Tuple[str, int]:
    if digits == 1:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return f"What is {a} + {b}?", a + b
    kind = rng.choice(KINDS)
    return kind(rng, rng.choice(_NAMES), rng.choice(_ITEMS))


def _draw(rng: random.Random, n: int, exclude: FrozenSet[str], split: str, digits: int,
          unique: bool = True) -> List[Problem]:
    return draw_problems(lambda: make_problem(rng, digits), n, f"word-{split}", exclude, unique)


def held_out_size(digits: int) -> int:
    """Problems in the held-out split: 16 of the 64 one-digit sums, TEST_SIZE word problems."""
    return 16 if digits == 1 else TEST_SIZE


@lru_cache(maxsize=4)
def _test(digits: int) -> Tuple[Problem, ...]:
    return tuple(_draw(random.Random(_TEST_SEED), held_out_size(digits), frozenset(), "test", digits))


def word_problems(n: int, seed: int, split: str, digits: int = 1) -> List[Problem]:
    """`n` problems of a split: "test" (fixed, at most `held_out_size(digits)`) or "train" (by seed, none
    of the test problems; one-digit sums repeat, as there are only 64)."""
    if digits not in (1, 2):
        raise ValueError(f"digits={digits}: 1 or 2")
    if split == "test":
        if n > held_out_size(digits):
            raise ValueError(f"the word-problem test split has {held_out_size(digits)} problems, {n} asked")
        return list(_test(digits)[:n])
    if split != "train":
        raise ValueError(f"unknown split {split!r}: train or test")
    return _draw(random.Random(seed * 7919 + 17), n, frozenset(p.problem for p in _test(digits)), "train", digits,
                 unique=digits != 1)
