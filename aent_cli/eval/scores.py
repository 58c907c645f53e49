"""Benchmark scores from per-sample correctness: avg@k, pass@k and maj@k.

Plain functions on lists so the trainer's validation, `aent eval` and the tests share one definition.
"""
from __future__ import annotations

import re
from decimal import Decimal
from math import comb
from typing import Dict, List, Optional, Sequence

from aent_cli.rewards.extract import canonical


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c are correct (Chen et al., 2021):
    1 - C(n-c, k) / C(n, k), the chance that k of the n samples drawn without replacement hold a correct one.
    With n == k this is simply 1 if any sample is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,!;: ]|\\q?quad|~")
_SPACE_NOT_IN_NUMBER = re.compile(r"(?<!\d) +| +(?!\d)")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°")


def normalize_answer(answer: Optional[str]) -> Optional[str]:
    """A canonical string so that trivially different spellings of one answer vote together in maj@k:
    the grader's spelling-only form plus a few value-preserving rewrites (`\\text{}`, degrees, `0.50`,
    `1,000`). Cheap and conservative: answers it cannot make equal simply vote apart."""
    if answer is None:
        return None
    s = canonical(answer)
    s = _TEXT_WRAPPERS.sub(r"\1", s)
    s = _SPACING.sub("", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\displaystyle", "")
    s = _SPACE_NOT_IN_NUMBER.sub("", s.replace("$", "")).rstrip(".")  # "4 5" stays apart from 45
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d*)?", s):  # thousands separators, not tuples like 1,2
        s = s.replace(",", "")
    return _exact_number(s) or s


_SCIENTIFIC = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)[eE]([-+]?)(\d{1,4})")
_PLAIN_NUMBER = re.compile(r"([-+]?)(\d*)(?:\.(\d*))?")


def _exact_number(s: str) -> Optional[str]:
    """One spelling per decimal number, computed on the digits (never through float, which would
    merge 98765432109876543210 and ...211): `+007.50` -> `7.5`, `-0.0` -> `0`. None if not a number."""
    sci = _SCIENTIFIC.fullmatch(s)
    if sci and abs(int(sci.group(1) + sci.group(2))) <= 100:  # 4.5e3 -> 4500, exactly (Decimal keeps every digit)
        s = format(Decimal(s), "f")
    m = _PLAIN_NUMBER.fullmatch(s)
    if not m or not (m.group(2) or m.group(3)):
        return None
    whole, frac = m.group(2).lstrip("0") or "0", (m.group(3) or "").rstrip("0")
    digits = whole + ("." + frac if frac else "")
    return "-" + digits if m.group(1) == "-" and digits != "0" else digits


def majority_index(extracted: Sequence[Optional[str]]) -> Optional[int]:
    """Index of the sample whose (normalised) answer got the most votes; samples without an answer
    do not vote. Ties go to the answer that appeared first, so the result is deterministic.
    None when no sample has an answer."""
    counts: Dict[str, int] = {}
    first: Dict[str, int] = {}
    for i, answer in enumerate(extracted):
        key = normalize_answer(answer)
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    if not counts:
        return None
    best = max(counts, key=lambda key: (counts[key], -first[key]))
    return first[best]


def majority_correct(extracted: Sequence[Optional[str]], correct: Sequence[bool]) -> bool:
    """Whether the majority answer is right: the grade of the first sample that gave it."""
    index = majority_index(extracted)
    return index is not None and bool(correct[index])


def bench_scores(correct: Sequence[Sequence[bool]], extracted: Sequence[Sequence[Optional[str]]],
                 k: Optional[int] = None) -> Dict[str, float]:
    """{"avg@k", "pass@k", "maj@k"} over problems, each problem with n samples (k defaults to n).

    avg@k (the paper's score) is the mean correctness over all samples and problems; pass@k the mean
    unbiased pass@k; maj@k the fraction of problems whose majority answer over the n samples is right.
    """
    if not correct:
        raise ValueError("no problems to score")
    n = len(correct[0])
    if any(len(row) != n for row in correct) or len(extracted) != len(correct):
        raise ValueError("every problem needs the same number of samples and extracted answers")
    k = n if k is None else k
    problems = len(correct)
    avg = sum(sum(bool(c) for c in row) for row in correct) / (problems * n)
    passes = sum(pass_at_k(n, sum(bool(c) for c in row), k) for row in correct) / problems
    majority = sum(majority_correct(ext, row) for ext, row in zip(extracted, correct)) / problems
    return {f"avg@{k}": avg, f"pass@{k}": passes, f"maj@{k}": majority}


def score_names(k: int) -> List[str]:
    return [f"avg@{k}", f"pass@{k}", f"maj@{k}"]


def metric_name(score: str) -> str:
    """MLflow's name for a score: it forbids `@` in metric names, so `avg@4` is logged as `avg_at_4`."""
    return score.replace("@", "_at_")
