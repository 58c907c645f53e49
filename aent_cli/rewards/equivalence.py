"""Mathematical equivalence of a predicted and a reference answer with math-verify.

This runs without any time limit (math-verify's own limit uses SIGALRM, which only works in a main
thread and cannot interrupt C code such as a huge integer power), so call it only inside a grading
worker process that the parent kills on its deadline (`pool.py`).

Percentages (`percent` mode): the % sign is taken off both answers first (`normalize.py`; the
antlr 4.9 parser that Hydra pins cannot read `\\%`), so `10\\%` always equals `10`. In mode `scale`
(the default, as Qwen2.5-Math's evaluation grader) a percentage also equals the same quantity as a
fraction: `25\\%` == `0.25` and `\\frac14`, `40\\%` == `0.4`. In mode `number` it does not. Unlike
Qwen's grader, `scale` applies only when one side is written as a percentage: `0.25` != `25`.
"""
from __future__ import annotations

import logging
from functools import lru_cache

from math_verify import LatexExtractionConfig, parse, verify

from aent_cli.rewards.normalize import PERCENT_MODES, prepare

_CONFIG = [LatexExtractionConfig()]

# math-verify warns once that its timeouts are off; the worker enforces them, so the warning is noise.
logging.getLogger("math_verify").setLevel(logging.ERROR)


@lru_cache(maxsize=4096)
def parse_answer(latex: str):
    """math-verify's parse of one answer wrapped as inline LaTeX (cached: references repeat)."""
    return parse("$" + latex + "$", extraction_config=_CONFIG, parsing_timeout=None)


def _verify(reference: str, predicted: str) -> bool:
    gold, target = parse_answer(reference), parse_answer(predicted)
    return bool(gold and target and verify(gold, target, timeout_seconds=None))


def is_equivalent(predicted: str, reference: str, percent: str = "scale") -> bool:
    """Whether `predicted` states the same mathematical answer as `reference`."""
    if percent not in PERCENT_MODES:
        raise ValueError(f"unknown percent mode {percent!r}; expected one of {', '.join(PERCENT_MODES)}")
    pred, ref = prepare(predicted), prepare(reference)
    if _verify(ref.latex, pred.latex):
        return True
    if percent != "scale" or pred.percent == ref.percent:
        return False
    if ref.percent:  # 25% vs 0.25: the percentage as a fraction
        return _verify(f"\\frac{{{ref.latex}}}{{100}}", pred.latex)
    return _verify(ref.latex, f"\\frac{{{pred.latex}}}{{100}}")
