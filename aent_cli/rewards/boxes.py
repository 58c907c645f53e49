"""`\\boxed{...}` spans of a response, found in one pass: time linear in the response length.

A response is model output, so it can be anything: `\\boxed{` repeated a million times, braces that
never close, a box inside a box. Every brace is matched once by a single stack pass (escaped braces
`\\{`, `\\}` do not count), so finding every complete box costs O(length), not O(boxes x length).
Pure string work: safe in the calling process, no time limit needed.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

BOX_CMD = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# An escaped backslash or brace (consumed as a pair, so `\\{` is a backslash then a real brace), or a brace.
_BRACE = re.compile(r"\\[\\{}]|[{}]")
_BLANKS = re.compile(r"[ \t]*")
_BARE_STOP = re.compile(r"[$\n]")
# What may stand between boxes that together are one answer: `\boxed{2}, \boxed{7}`,
# `$\boxed{(1,4)}$ and $\boxed{(4,1)}$`, `x = \boxed{2}; y = \boxed{3}`. Never "or": that is a hedge.
_JOINER = re.compile(
    r"(?:\s|\$|\\[()\[\]]|[,;&]|\\q?quad|\\[,;: ]|\\text\{\s*(?:and|,)?\s*\}|\band\b|\\text\{\s*and\s*\}"
    r"|(?<![A-Za-z])[A-Za-z](?:_\{?\w+\}?)?\s*=)*")
_MAX_JOIN_GAP = 40


@dataclass(frozen=True)
class Box:
    start: int  # index of the backslash of `\boxed`
    content_start: int
    content_end: int  # exclusive; the closing brace (or the end of a bare `\boxed 5` argument)
    end: int  # index just past the box


def _closing_braces(text: str, start: int) -> Dict[int, int]:
    """{index of `{`: index of its `}`} for every matched brace at or after `start`."""
    close: Dict[int, int] = {}
    stack: List[int] = []
    for m in _BRACE.finditer(text, start):
        tok = m.group()
        if tok == "{":
            stack.append(m.start())
        elif tok == "}" and stack:
            close[stack.pop()] = m.start()
    return close


def boxes_from_the_end(text: str) -> Iterator[Box]:
    """Every complete box, the last `\\boxed` command first; truncated ones (no closing brace, as
    in a cut-off generation) are left out. `\\boxed 5` runs to the end of its math span or line.
    A caller that stops early pays only for the commands it looked at (plus one brace pass)."""
    # Plain ints, not match objects: a million live match objects make the garbage collector's
    # passes (and so the whole call) grow faster than the text.
    starts: List[int] = []
    ends: List[int] = []
    for m in BOX_CMD.finditer(text):
        starts.append(m.start())
        ends.append(m.end())
    close: Dict[int, int] = {}
    covered_from = len(text) + 1  # `close` holds the match of every brace at or after this index
    stops: Optional[List[int]] = None
    for start, cmd_end in zip(reversed(starts), reversed(ends)):
        i = _BLANKS.match(text, cmd_end).end()
        if i < len(text) and text[i] == "{":
            if i < covered_from:
                # The last box usually closes near the end: match the braces from it first, and
                # only if an earlier box is asked for, every brace after the first command, once.
                covered_from = i if covered_from > len(text) else ends[0]
                close = _closing_braces(text, covered_from)
            end = close.get(i)
            if end is not None:
                yield Box(start, i + 1, end, end + 1)
        elif i > cmd_end and i < len(text):
            if stops is None:  # positions of `$` and newlines, once, for every bare box
                stops = [s.start() for s in _BARE_STOP.finditer(text)]
            k = bisect.bisect_left(stops, i)
            end = stops[k] if k < len(stops) else len(text)
            yield Box(start, i, end, end)


def _content(text: str, box: Box) -> str:
    return text[box.content_start:box.content_end].strip()


def last_boxed(text: str) -> Optional[str]:
    """Content of the last complete non-empty `\\boxed{...}` (or `\\fbox{...}`, `\\boxed x`), else None."""
    for box in boxes_from_the_end(text):
        content = _content(text, box)
        if content:
            return content
    return None


def final_boxes(text: str) -> Optional[str]:
    """The last box together with the boxes just before it that are joined to it only by commas,
    "and" or math delimiters (`\\boxed{2}, \\boxed{7}` -> "2, 7"), else the last box alone.
    Repeats of one answer count once. None when there is no complete non-empty box."""
    run: List[Box] = []
    for box in boxes_from_the_end(text):
        if not run:
            if _content(text, box):
                run.append(box)
            continue
        gap_start, gap_end = box.end, run[0].start
        if gap_end < gap_start or gap_end - gap_start > _MAX_JOIN_GAP:
            break  # nested in the next box, or too far from it to be part of one answer
        if _JOINER.fullmatch(text, gap_start, gap_end) is None:
            break
        run.insert(0, box)
    if not run:
        return None
    parts: List[str] = []
    for box in run:
        content = _content(text, box)
        if content and content not in parts:
            parts.append(content)
    return ", ".join(parts)
