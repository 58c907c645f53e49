"""Final-answer extraction from model responses. Pure string functions, linear in the response
length: no sympy, safe anywhere, no time limit needed.

Extractors (`reward.extractor`):

- `strict`: the last complete `\\boxed{}`, required. A response without one has no answer. The
  training reward's default, so RL keeps teaching the format.
- `auto`: the boxes first (the last one, joined with the boxes just before it when only commas or
  "and" separate them: `\\boxed{2}, \\boxed{7}` -> "2, 7"); without a box, the final answer as a
  reader finds it (`final_answer.py`: a short bare answer, "the answer is ...", a closing display,
  "So x = 5."); a hedge ("3 or 5") gets none. The `aent eval` default and `math_reward`'s.
- `last_number`: the last number in the response.
"""
from __future__ import annotations

import re
from typing import Optional

from aent_cli.rewards.boxes import BOX_CMD, final_boxes, last_boxed
from aent_cli.rewards.final_answer import bare_answer, strip_math_delimiters, unboxed_answer

EXTRACTORS = ("strict", "auto", "last_number")
# Which extractor each command uses when `reward.extractor` is left unset (null).
TRAIN_EXTRACTOR, EVAL_EXTRACTOR = "strict", "auto"

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")

__all__ = ["EXTRACTORS", "EVAL_EXTRACTOR", "TRAIN_EXTRACTOR", "bare_answer", "canonical", "extract_answer",
           "last_boxed", "last_number", "strip_math_delimiters"]


def last_number(text: str) -> Optional[str]:
    """The last number in the text (integers, decimals, a/b), thousands separators removed."""
    matches = _NUMBER.findall(_THOUSANDS.sub("", text))
    return matches[-1] if matches else None


def check_extractor(extractor: str) -> str:
    if extractor not in EXTRACTORS:
        raise ValueError(f"unknown extractor {extractor!r}; expected one of {', '.join(EXTRACTORS)}")
    return extractor


def extract_answer(text: str, extractor: str = "auto") -> Optional[str]:
    """The final answer of a response by the named extractor (see the module docstring), or None
    when it has none. Raises ValueError for an unknown extractor."""
    check_extractor(extractor)
    if extractor == "strict":
        return last_boxed(text)
    if extractor == "auto":
        if BOX_CMD.search(text):  # boxed: the boxes decide; an empty or cut-off box is no answer
            return final_boxes(text)
        return unboxed_answer(text)
    return last_number(text)


_SPACING = re.compile(r"\\\\|\\[,;:! ]|\\q?quad(?![A-Za-z])")  # a row break (two backslashes) is kept
_SIZING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])")
_WHITESPACE = re.compile(r"\s+")
_SPACED_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3})((?: \d{3})+)(?![\d])")


def _space(m: re.Match) -> str:
    # Whitespace is spelling, except between two digits ("4 5" is not 45) or after a command
    # name before a letter ("\\pi r" is not "\\pir").
    s, i, j = m.string, m.start(), m.end()
    before, after = s[i - 1] if i else "", s[j] if j < len(s) else ""
    if before.isdigit() and after.isdigit():
        return " "
    if before.isalpha() and after.isalpha() and re.search(r"\\[A-Za-z]+$", s[max(0, i - 32):i]):
        return " "
    return ""


def canonical(answer: str) -> str:
    """A spelling-only normal form: two answers with the same canonical form are equal. Only
    rewrites that never change the value belong here."""
    s = answer.strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SIZING.sub("", s)
    s = _SPACING.sub(lambda m: m.group() if m.group() == "\\\\" else " ", s)
    s = _WHITESPACE.sub(" ", s).strip()
    s = _SPACED_THOUSANDS.sub(lambda m: m.group(1) + m.group(2).replace(" ", ""), s)  # 1 000 000
    s = _WHITESPACE.sub(_space, s)
    return strip_math_delimiters(s).rstrip(".")
