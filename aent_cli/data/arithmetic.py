"""The embedded task: two-digit sums with a short context, answers graded by the math reward.

A prompt reads "kovato 47+35=": one nonsense word from a fixed lexicon (the context a word problem
carries; the answer never depends on it), then the sum. The reference answer is the integer (82); a
right response ends in "\\boxed{82}".

The warm start (models/tiny.py) teaches two ways to answer, so RL has a choice to make:
- direct, the more likely one: "\\boxed{72}" written at once, by a solver that forgets the carry:
  right exactly when the units digits do not carry (about 55% of the problems);
- worked, the less likely one: "7+5=12, 4+3+1=8, \\boxed{82}", units then tens with the carry:
  right on every problem once learned.
So the warm-started policy's most likely answer path is only partly right and a less likely one is
right more often: probability kept on the less likely first tokens is what RL can reward.

The held-out (test) problems come from a fixed seed and are excluded from every train and warm-start
draw, so val/acc measures problems the model never trained on.
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import FrozenSet, List, Optional

from aent_cli.data.problem import Problem, draw_problems

TASK_VERSION = 4
TEST_SIZE = 512
LEXICON_SIZE = 1500
_TEST_SEED = 424242
_LEXICON_SEED = 7
_ONSETS = ["", "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gl",
           "kr", "pl", "st", "tr", "sh", "ch"]
_NUCLEI = ["a", "e", "i", "o", "u", "ai", "ou", "ee"]


@lru_cache(maxsize=1)
def lexicon() -> List[str]:
    """LEXICON_SIZE distinct nonsense words of 2-3 syllables (fixed: part of the task)."""
    rng = random.Random(_LEXICON_SEED)
    words, seen = [], set()
    while len(words) < LEXICON_SIZE:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) for _ in range(rng.choice((2, 3))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def carries(a: int, b: int) -> bool:
    """Whether the units digits of a + b carry into the tens."""
    return a % 10 + b % 10 >= 10


def make_problem(rng: random.Random, carry_share: Optional[float] = None) -> tuple[str, int]:
    """One prompt and its answer. `carry_share`: the share of problems whose units carry (None: as
    uniform two-digit operands give, 45%)."""
    want = None if carry_share is None else rng.random() < carry_share
    while True:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if want is None or carries(a, b) == want:
            break
    return f"{rng.choice(lexicon())} {a}+{b}=", a + b


def operands(prompt: str) -> tuple[int, int]:
    """(a, b) of a prompt "word a+b="."""
    a, b = prompt.rsplit(" ", 1)[-1].rstrip("=").split("+")
    return int(a), int(b)


def _draw(rng: random.Random, n: int, exclude: FrozenSet[str], unique: bool, split: str,
          carry_share: Optional[float] = None) -> List[Problem]:
    return draw_problems(lambda: make_problem(rng, carry_share), n, f"arith-{split}", exclude, unique)


@lru_cache(maxsize=1)
def test_problems() -> List[Problem]:
    return _draw(random.Random(_TEST_SEED), TEST_SIZE, frozenset(), unique=True, split="test")


@lru_cache(maxsize=1)
def _test_prompts() -> FrozenSet[str]:
    return frozenset(p.problem for p in test_problems())


def arithmetic_problems(n: int, seed: int, split: str, hard_share: Optional[float] = None) -> List[Problem]:
    """`n` problems of a split: "test" (fixed, at most TEST_SIZE), "train" or "warmstart" (by seed).
    `hard_share`: the share of hard problems, those whose units carry (where the direct answer is
    wrong); None draws operands uniformly (45% carry). The test split always keeps the natural mix."""
    if split == "test":
        if n > TEST_SIZE:
            raise ValueError(f"the arithmetic test split has {TEST_SIZE} problems, {n} asked")
        return test_problems()[:n]
    offset = {"train": 0, "warmstart": 1_000_003}[split]
    return _draw(random.Random(seed * 7919 + offset), n, _test_prompts(), unique=False, split=split,
                 carry_share=hard_share)


def boxed_response(answer: str) -> str:
    return "\\boxed{" + answer + "}"


def direct_response(prompt: str) -> str:
    """The direct answer of a solver that forgets the carry: "\\boxed{72}" for 47+35 (right when the
    units do not carry)."""
    a, b = operands(prompt)
    return boxed_response(str((a // 10 + b // 10) * 10 + (a + b) % 10))


def worked_response(prompt: str) -> str:
    """Units, then tens with the carry, then the boxed sum: "7+5=12, 4+3+1=8, \\boxed{82}"."""
    a, b = operands(prompt)
    units, carry = a % 10 + b % 10, int(carries(a, b))
    tens = a // 10 + b // 10 + carry
    return f"{a % 10}+{b % 10}={units}, {a // 10}+{b // 10}+{carry}={tens}, " + boxed_response(str(a + b))
