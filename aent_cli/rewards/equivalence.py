"""Mathematical equivalence of a predicted and a reference answer with math-verify.

This runs without any time limit (math-verify's own limit uses SIGALRM, which only works in a main
thread and cannot interrupt C code such as a huge integer power), so call it only inside a grading
worker process that the parent kills on its deadline (`pool.py`).
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache

from math_verify import LatexExtractionConfig, parse, verify

_CONFIG = [LatexExtractionConfig()]
# latex2sympy2_extended's parser for antlr 4.9 (the runtime Hydra pins) crashes on percentages
# ("'AtomContext' object has no attribute 'FUNC_GAMMA'"), so `10\%` would never parse. Percent signs
# are dropped on both sides instead, as the Qwen2.5-Math evaluation does: `10\%` == `10`.
_PERCENT = re.compile(r"\\?%")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")

# math-verify warns once that its timeouts are off; the worker enforces them, so the warning is noise.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def _as_latex(answer: str) -> str:
    answer = _UNESCAPED_DOLLAR.sub("", _PERCENT.sub("", answer))
    return "$" + answer.strip() + "$"


@lru_cache(maxsize=4096)
def parse_answer(answer: str):
    """math-verify's parse of one answer wrapped as inline LaTeX (cached: references repeat)."""
    return parse(_as_latex(answer), extraction_config=_CONFIG, parsing_timeout=None)


def is_equivalent(predicted: str, reference: str) -> bool:
    gold = parse_answer(reference)
    target = parse_answer(predicted)
    if not gold or not target:
        return False
    return bool(verify(gold, target, timeout_seconds=None))
