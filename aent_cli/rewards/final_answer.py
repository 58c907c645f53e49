"""The final answer of a response that has no `\\boxed{}` (the `auto` extractor's fallback).

Where a grader such as math-verify anchors on "final answer is", "answer:" and the last math span,
these rules read the end of the response the same way, in order:

1. the whole response, when it is a short bare answer (`0.5`, `$\\frac12$`, `**58**`);
2. after the last final-answer phrase ("The answer is $\\frac{3}{4}$.", "Final Answer: the largest n
   is 17", "**Answer:** 58", "the final answer is\\n\\[ 42 \\]");
3. the last display math (`\\[ 42 \\]`, `$$42$$`) when only a short line follows it;
4. the last sentence, when it states a value ("So x = 5.", "Thus the area is 36 square meters.").

A hedge ("3 or 5", "$3$ or $5$") is no answer. Only the last `_TAIL` characters are read and every
pattern is linear, so this costs O(length) on any input. Pure string work, safe in any process.
"""
from __future__ import annotations

import re
from typing import List, Optional

from aent_cli.rewards.normalize import is_number_with_units

_TAIL = 3000  # a final answer sits at the end; reading a bounded tail keeps the cost bounded
_BARE_MAX_CHARS = 64
_SEGMENT_MAX = 400
_VALUE_MAX = 80

_MARKDOWN = re.compile(r"\*\*|__|`")
_WORD = re.compile(r"(?<![\\A-Za-z])(?!(?:sin|cos|tan|cot|sec|csc|log|ln|exp|sqrt|pi|inf|mod)\b)[A-Za-z]{2,}")
_TEXT_ARG = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}")
_PHRASE = re.compile(
    r"(?i)(?:final\s+answer|the\s+answer(?:\s+to\s+[^.:\n]{0,60}?)?|\banswer|the\s+(?:final\s+)?result)"
    r"\s*(?:is\b|:|=|\n)")
_DISPLAY = re.compile(r"\\\[(.{1,2000}?)\\\]|\$\$(.{1,2000}?)\$\$", re.DOTALL)
_INLINE = re.compile(r"(?<!\\)\$([^$\n]{1,500}?)(?<!\\)\$|\\\((.{1,500}?)\\\)")
_HEDGE = re.compile(r"(?i)\bor\b|\beither\b|\bmaybe\b|\bperhaps\b")
_SENTENCE_END = re.compile(r"\.(?=\s|$)")
_IS = re.compile(r"(?i)\b(?:is|are|equals|was|be)\b\s*(?::\s*)?")
_NUMERIC_OR_MATH = re.compile(r"\d|\\[A-Za-z]|^[A-Za-z]$|^\(?[A-E]\)?$")
_EQUALS = re.compile(r"(?<![<>!\\])=")
_LIST_JOINER = re.compile(r"(?i)^(?:\s|,|;|and|\\text\{\s*and\s*\})*$")


def strip_math_delimiters(text: str) -> str:
    text = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
            return text[len(left):len(text) - len(right)].strip()
    return text


def bare_answer(text: str) -> Optional[str]:
    """The whole response as the answer when it is a short bare expression, else None."""
    text = strip_math_delimiters(_MARKDOWN.sub("", text))
    if not text or len(text) > _BARE_MAX_CHARS or "\n" in text:
        return None
    plain = _TEXT_ARG.sub("", text)
    if _HEDGE.search(plain) or (_WORD.search(plain) and not is_number_with_units(text)):
        return None  # a hedge ("2 or 7") or prose ("So x = 5"), but "36 square meters" is an answer
    return text.rstrip(".").strip() or None


def _math_spans(line: str) -> List[re.Match]:
    return list(_INLINE.finditer(line)) + list(_DISPLAY.finditer(line))


def _span_text(m: re.Match) -> str:
    return next(g for g in m.groups() if g is not None).strip()


def _from_spans(line: str) -> Optional[str]:
    """The value of the math spans in `line`: one span, or a list joined by commas/"and"."""
    spans = sorted(_math_spans(line), key=lambda m: m.start())
    if not spans:
        return None
    parts = [_span_text(spans[-1])]
    for prev, nxt in zip(reversed(spans[:-1]), reversed(spans[1:])):
        if not _LIST_JOINER.match(line[prev.end():nxt.start()]):
            break
        parts.insert(0, _span_text(prev))
    unique = list(dict.fromkeys(p for p in parts if p))
    return ", ".join(unique) if unique else None


def _value(segment: str) -> Optional[str]:
    """The answer stated by a short piece of text, or None for no answer / a hedge."""
    segment = segment.strip().lstrip(":=").strip()
    if segment.startswith(("\\[", "$$")):
        display = _DISPLAY.match(segment)
        if display:
            return _span_text(display) or None
    line = segment.split("\n", 1)[0]
    cut = _SENTENCE_END.search(line)
    line = line[:cut.start()] if cut else line
    outside_math = _INLINE.sub(" ", _DISPLAY.sub(" ", line))
    if _HEDGE.search(outside_math):
        return None
    spanned = _from_spans(line)
    if spanned is not None:
        return spanned
    value = line
    for m in _IS.finditer(line):  # "the largest n is 17" -> "17"
        value = line[m.end():]
    if _EQUALS.search(value):  # "So x = 5" -> "5"
        value = _EQUALS.split(value)[-1]
    value = value.strip().rstrip(".,;").strip()
    if not value or len(value) > _VALUE_MAX or not _NUMERIC_OR_MATH.search(value):
        return None
    return value


def _after_phrase(tail: str) -> Optional[str]:
    phrases = list(_PHRASE.finditer(tail))
    if not phrases:
        return None
    segment = tail[phrases[-1].end():phrases[-1].end() + _SEGMENT_MAX]
    return _value(segment)


def _last_display(tail: str) -> Optional[str]:
    """The closing display: the last `\\]` (or `$$`) and the nearest opener before it, so an
    earlier display left unclosed does not swallow it."""
    best = None
    for opener, closer in (("\\[", "\\]"), ("$$", "$$")):
        end = tail.rfind(closer)
        start = tail.rfind(opener, 0, end) if end > 0 else -1
        if start >= 0 and (best is None or end > best[1]):
            best = (start + len(opener), end, end + len(closer))
    if best is None:
        return None
    after = tail[best[2]:].strip()
    if "\n" in after or len(after) > 60:
        return None
    return tail[best[0]:best[1]].strip() or None


def _last_sentence(tail: str) -> Optional[str]:
    lines = [line for line in tail.strip().split("\n") if line.strip()]
    if not lines:
        return None
    line = lines[-1].strip()
    sentences = [s for s in _SENTENCE_END.split(line) if s.strip()]
    if not sentences:
        return None
    last = sentences[-1]
    if _math_spans(last) or _IS.search(last) or "=" in last:
        return _value(last)
    return None


def unboxed_answer(text: str) -> Optional[str]:
    """The final answer of a response without a box (rules in the module docstring), else None."""
    bare = bare_answer(text)
    if bare is not None:
        return bare
    tail = _MARKDOWN.sub("", text[-_TAIL:])
    for rule in (_after_phrase, _last_display, _last_sentence):
        found = rule(tail)
        if found is not None:
            return found
    return None
