"""Value-preserving rewrites of an extracted answer before math-verify parses it.

Each rewrite keeps the mathematics and only changes the spelling to one math-verify reads:

- percent: `15\\%`, `15 percent`, `15\\text{ percent}` -> `15`, flagged as a percentage (the grader
  then decides, by `percent` mode, whether `0.15` is also the same quantity);
- scientific notation: `4.5e33`, `4.5E+33` -> `4.5\\times 10^{33}` (minerva writes its references so);
- thousands groups split by spaces, `1 000 000` -> `1000000`;
- two numbers side by side, `4 5` or `6 \\quad 1`, are a list `4, 5`, never the number 45;
- plain-text relations `>=`, `<=`, `!=` and `bmatrix` -> `\\geq`, `\\leq`, `\\neq`, `pmatrix`;
- a number followed by words is the number: `36 square meters`, `12 \\text{ cm}^2` -> `36`, `12`.

Pure regex work on answers of at most a few thousand characters (the grader's cap).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

PERCENT_MODES = ("scale", "number")  # how a percentage compares with a plain number (`equivalence.py`)
_DOLLAR = re.compile(r"(?<!\\)\$")
_MARKDOWN = re.compile(r"\*\*|__")
_STYLE = re.compile(r"\\(?:displaystyle|textstyle)(?![A-Za-z])")
_PERCENT = re.compile(
    r"\s*(?:\\?%|\\text\{\s*(?:\\?%|percent(?:age)?)\s*\}|\bpercent(?:age)?\b|\\percent\b)\s*\.?\s*$", re.I)
_SCIENTIFIC = re.compile(r"^(-?\d+(?:\.\d+)?)\s*[eE]\s*\+?(-?\d+)$")
_SPACING = re.compile(r"\\\\|\\[,;: !]|\\q?quad\b|~")  # a row break (two backslashes) is matched to be kept
_SPACED_THOUSANDS = re.compile(r"^-?\d{1,3}(?: \d{3})+(?:\.\d+)?$")
_SIDE_BY_SIDE = re.compile(r"(?<=\d)\s+(?=-?\d)")
_RELATIONS = (("<=", "\\leq "), (">=", "\\geq "), ("!=", "\\neq "), ("≤", "\\leq "), ("≥", "\\geq "),
              ("≠", "\\neq "))
_BMATRIX = re.compile(r"\\(begin|end)\{[bB]matrix\}")
_NUMBER_THEN_WORDS = re.compile(
    r"^(\\\$\s*)?(-?(?:\d+(?:[.,]\d+)*|\d*\.\d+))"
    r"(?:\s*(?:\\(?:text|mathrm|mbox)\s*\{\s*[A-Za-z][A-Za-z .]*\}|(?!(?:pi|ln|log|sin|cos|tan)\b)[A-Za-z]{2,}\.?)"
    r"(?:\s*\^\s*\{?[23]\}?)?)+\s*$")


def _space_or_row_break(m: re.Match) -> str:
    return m.group() if m.group() == "\\\\" else " "


def is_number_with_units(text: str) -> bool:
    """`36 square meters`, `12 \\text{ cm}^2`, `\\$4 dollars`: a number followed only by words."""
    return _NUMBER_THEN_WORDS.match(text.strip().rstrip(".")) is not None


@dataclass(frozen=True)
class Prepared:
    latex: str  # the answer as math-verify should read it, without `$` delimiters
    percent: bool  # the answer was written as a percentage (its % sign removed from `latex`)


def prepare(answer: str) -> Prepared:
    """The answer in a spelling math-verify reads (see the module docstring)."""
    s = _MARKDOWN.sub("", _DOLLAR.sub("", answer))
    s = _STYLE.sub("", s).strip().rstrip(".").strip()
    percent = False
    m = _PERCENT.search(s)
    if m and m.start() > 0:
        s, percent = s[:m.start()].strip(), True
    for plain, latex in _RELATIONS:
        s = s.replace(plain, latex)
    s = _BMATRIX.sub(r"\\\1{pmatrix}", s)
    s = _SPACING.sub(_space_or_row_break, s).strip()
    sci = _SCIENTIFIC.match(s)
    if sci:
        s = f"{sci.group(1)}\\times 10^{{{sci.group(2)}}}"
    if _SPACED_THOUSANDS.match(s):
        s = s.replace(" ", "")
    words = _NUMBER_THEN_WORDS.match(s)
    if words:
        s = (words.group(1) or "") + words.group(2)
    s = _SIDE_BY_SIDE.sub(", ", s)
    return Prepared(s, percent)
