"""One problem with its reference answer, whatever file or generator it came from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str
    meta: Dict[str, Any] = field(default_factory=dict)
