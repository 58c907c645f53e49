"""Problems from a JSONL file, checked row by row before any training starts.

Every problem in the file must be usable: a bad row stops the run with `file:line: what is wrong`
rather than surfacing as a crash (or a silent zero reward) hours later.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Union

from aent_cli.data.problem import Problem
from aent_cli.errors import DataError


def _field(row: Dict[str, Any], name: str, where: str) -> str:
    if name not in row:
        raise DataError(f"{where}: missing field {name!r}")
    value = row[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} must be a string, got {type(value).__name__} {value!r}"[:200])
    if not value.strip():
        raise DataError(f"{where}: field {name!r} is empty")
    return value


def _row_id(row: Dict[str, Any], id_field: str, index: int, where: str) -> str:
    if id_field not in row:
        return str(index)
    value = row[id_field]
    # Integer ids are common in exported datasets; anything else is a mistake.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {id_field!r} must be a non-empty string or an integer, got {value!r}"[:200])
    return value


def load_jsonl(path: Union[str, os.PathLike], problem_field: str = "problem", answer_field: str = "answer",
               id_field: str = "id") -> List[Problem]:
    """All problems of a JSONL file (one JSON object per line; blank lines are skipped).

    A row without `id_field` gets its 0-based line index as id. Other fields go to `Problem.meta`.
    Raises DataError naming `file:line` on bad JSON, a non-object row, a missing, empty or non-string
    problem/answer, or a duplicate id; `path: ...` for a missing, unreadable or empty file.
    """
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{name}: is a directory, not a JSONL file") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read ({exc.strerror})") from None

    problems: List[Problem] = []
    seen: Dict[str, int] = {}
    for index, line in enumerate(raw.split(b"\n")):
        where = f"{name}:{index + 1}"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except UnicodeDecodeError:
            raise DataError(f"{where}: not valid UTF-8") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        problem = _field(row, problem_field, where)
        answer = _field(row, answer_field, where)
        pid = _row_id(row, id_field, index, where)
        if pid in seen:
            raise DataError(f"{where}: duplicate id {pid!r} (first on line {seen[pid]})")
        seen[pid] = index + 1
        meta = {k: v for k, v in row.items() if k not in (problem_field, answer_field, id_field)}
        problems.append(Problem(id=pid, problem=problem, answer=answer.strip(), meta=meta))
    if not problems:
        raise DataError(f"{name}: empty file, no problems")
    return problems
