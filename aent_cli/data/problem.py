"""One problem with its reference answer, whatever file or generator it came from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Tuple


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str
    meta: Dict[str, Any] = field(default_factory=dict)


def draw_problems(make: Callable[[], Tuple[str, object]], n: int, id_prefix: str,
                  exclude: FrozenSet[str] = frozenset(), unique: bool = True) -> List[Problem]:
    """`n` problems from a generator `make()` -> (text, answer), skipping texts in `exclude` (a held-out
    split) and, when `unique`, repeats; ids `<id_prefix>-0`, `-1`, ... in draw order."""
    out: List[Problem] = []
    seen = set()
    while len(out) < n:
        text, answer = make()
        if text in exclude or (unique and text in seen):
            continue
        seen.add(text)
        out.append(Problem(id=f"{id_prefix}-{len(out)}", problem=text, answer=str(answer)))
    return out
