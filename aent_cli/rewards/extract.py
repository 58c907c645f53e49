"""Final-answer extraction from model responses. Pure string functions: no sympy, safe anywhere."""
from __future__ import annotations

import re
from typing import Optional

EXTRACTORS = ("boxed", "last_number")

# A response without \boxed counts as a bare answer only when it is this short and reads like math,
# not prose ("0.5", "$\frac12$", "x = 3"; not "The answer is 5").
_BARE_MAX_CHARS = 64
_PROSE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}\s+[A-Za-z]{2,}\b")
_TEXT_ARG = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}")
_BOX_CMD = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _match_braces(text: str, open_at: int) -> Optional[int]:
    """Index of the `}` closing the `{` at `open_at`; escaped braces (`\\{`) do not count."""
    depth, i = 0, open_at
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character, so \{ and \} never change the depth
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def last_boxed(text: str) -> Optional[str]:
    """Content of the last complete `\\boxed{...}` (or `\\fbox{...}`, `\\boxed x`), else None."""
    for m in reversed(list(_BOX_CMD.finditer(text))):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            end = _match_braces(text, i)
            if end is None:
                continue  # truncated box (generation cut off): look for an earlier complete one
            content = text[i + 1:end].strip()
        elif i > m.end():
            # `\boxed 5`: the argument runs to the end of the math span or line
            content = re.split(r"[$\n]", text[i:], maxsplit=1)[0].strip()
        else:
            continue
        if content:
            return content
    return None


def strip_math_delimiters(text: str) -> str:
    text = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
            return text[len(left):len(text) - len(right)].strip()
    return text


def bare_answer(text: str) -> Optional[str]:
    """The whole response as the answer when it is a short bare expression, else None."""
    text = strip_math_delimiters(text)
    if not text or len(text) > _BARE_MAX_CHARS or "\n" in text:
        return None
    if _PROSE.search(_TEXT_ARG.sub("", text)):
        return None
    return text


def last_number(text: str) -> Optional[str]:
    """The last number in the text (integers, decimals, a/b), thousands separators removed."""
    matches = _NUMBER.findall(_THOUSANDS.sub("", text))
    return matches[-1] if matches else None


def extract_answer(text: str, extractor: str = "boxed") -> Optional[str]:
    """The final answer of a response, or None when it has none.

    `boxed`: the last `\\boxed{}` (brace-matched), or the whole response when it is a bare answer
    such as "0.5" or "$\\frac12$". `last_number`: the last number in the response.
    """
    if extractor == "boxed":
        boxed = last_boxed(text)
        if boxed is not None or _BOX_CMD.search(text):  # an empty or cut-off box is no answer
            return boxed
        return bare_answer(text)
    if extractor == "last_number":
        return last_number(text)
    raise ValueError(f"unknown extractor {extractor!r}; expected one of {', '.join(EXTRACTORS)}")


_SPACING = re.compile(r"\\[,;:! ]|\\q?quad|\s+")
_SIZING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])")


def canonical(answer: str) -> str:
    """A spelling-only normal form: two answers with the same canonical form are equal. Only
    rewrites that never change the value belong here."""
    s = answer.strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SIZING.sub("", s)
    s = _SPACING.sub("", s)
    return strip_math_delimiters(s).rstrip(".")
