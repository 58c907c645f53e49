"""Verdicts that need no math-verify: same spelling, or two plain numbers.

Most pairs in a training batch are decided here in microseconds (the right answer spelled as the
reference, or a wrong integer), which leaves the worker processes for the pairs that need sympy.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Optional

from aent_cli.rewards.extract import canonical

_INTEGER = re.compile(r"-?\d+")
_DECIMAL = re.compile(r"-?(?:\d+\.\d*|\.\d+)")
# math-verify compares decimals after rounding, so only a clear gap is decided here.
_CLEARLY_DIFFERENT = Fraction(1, 1000)


def _integer_key(digits: str) -> str:
    # Compared as text: int() refuses strings over 4,300 digits, and a model can box one.
    magnitude = digits.lstrip("-").lstrip("0") or "0"
    return "-" + magnitude if digits.startswith("-") and magnitude != "0" else magnitude


def quick_verdict(predicted: str, reference: str) -> Optional[bool]:
    """True/False when the pair is decided without math-verify, else None."""
    pred, ref = canonical(predicted), canonical(reference)
    if pred == ref:
        return True
    if _INTEGER.fullmatch(pred) and _INTEGER.fullmatch(ref):
        return _integer_key(pred) == _integer_key(ref)
    numbers = (_INTEGER, _DECIMAL)
    if (len(pred) < 100 and len(ref) < 100 and any(p.fullmatch(pred) for p in numbers)
            and any(p.fullmatch(ref) for p in numbers)):
        a, b = Fraction(pred), Fraction(ref)
        if a == b:
            return True
        if abs(a - b) > _CLEARLY_DIFFERENT * max(1, abs(a), abs(b)):
            return False
    return None
