"""Turn a `data.train` / `data.val` spec into problems: a JSONL path or a Hugging Face hub dataset.

The embedded "arithmetic" task is generated, not loaded, so the caller dispatches it before here.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterable, List

from aent_cli.data.jsonl import load_jsonl
from aent_cli.data.problem import Problem
from aent_cli.errors import DataError, UserError
from aent_cli.rewards.extract import last_boxed

# owner/name as the hub spells it; anything with more slashes or a file suffix is a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".txt")
_ID_FIELDS = ("id", "unique_id", "idx")


def looks_like_hub_id(spec: str) -> bool:
    return bool(_HUB_ID.match(spec)) and not spec.lower().endswith(_FILE_SUFFIXES)


def load_problems(spec: str, *, split: str = "train", problem_field: str = "problem",
                  answer_field: str = "answer") -> List[Problem]:
    """Problems from `spec`: an existing JSONL file (relative to the cwd, `~` expanded), else a hub
    dataset id such as "DigitalLearningGmbH/MATH-lighteval" (needs the optional `datasets` package)."""
    if spec == "arithmetic":
        raise ValueError("the 'arithmetic' task is generated, not loaded: dispatch it before load_problems")
    path = Path(spec).expanduser()
    if path.is_file():
        return load_jsonl(path, problem_field=problem_field, answer_field=answer_field)
    if path.exists():
        raise DataError(f"{spec}: is a directory, not a JSONL file")
    if looks_like_hub_id(spec):
        return load_hub_dataset(spec, split=split, problem_field=problem_field, answer_field=answer_field)
    raise DataError(f"{spec}: no such file (and not a Hugging Face dataset id like 'owner/name')")


def _answer_text(value: Any) -> Any:
    # Hub datasets often store numeric answers (AMC's 27.0); a JSONL file must spell them as strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return value


def rows_to_problems(rows: Iterable[Dict[str, Any]], source: str, problem_field: str,
                     answer_field: str) -> List[Problem]:
    """Map dataset rows to problems. Rows without `answer_field` but with a `solution` (MATH-style
    datasets) take the last \\boxed{} of the solution as the answer."""
    problems: List[Problem] = []
    seen = set()
    for index, row in enumerate(rows):
        where = f"{source}:row {index}"
        problem = row.get(problem_field)
        if not isinstance(problem, str) or not problem.strip():
            raise DataError(f"{where}: field {problem_field!r} is missing, empty or not a string")
        if answer_field in row:
            answer = _answer_text(row[answer_field])
        elif isinstance(row.get("solution"), str):
            answer = last_boxed(row["solution"])
        else:
            raise DataError(f"{where}: no field {answer_field!r} (nor a 'solution' with a \\boxed{{}} answer); "
                            f"set data.answer_field")
        if not isinstance(answer, str) or not answer.strip():
            raise DataError(f"{where}: answer is missing, empty or not a string: {answer!r}"[:200])
        pid = next((str(row[k]) for k in _ID_FIELDS if row.get(k) not in (None, "")), f"{index}")
        if pid in seen:
            pid = f"{pid}#{index}"
        seen.add(pid)
        meta = {k: v for k, v in row.items() if k not in (problem_field, answer_field)}
        problems.append(Problem(id=pid, problem=problem, answer=answer.strip(), meta=meta))
    if not problems:
        raise DataError(f"{source}: no problems")
    return problems


def load_hub_dataset(dataset_id: str, *, split: str, problem_field: str, answer_field: str) -> List[Problem]:
    try:
        import datasets  # optional: only hub specs need it
    except ImportError:
        raise UserError(f"data spec {dataset_id!r} is not a file, so it is read as a Hugging Face dataset, "
                        f"which needs the `datasets` package: pip install datasets") from None
    try:
        rows = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # noqa: BLE001 - network, auth, unknown id or split: all the user's to fix
        raise DataError(f"{dataset_id}: cannot load split {split!r} from the Hugging Face hub: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]) from None
    return rows_to_problems(rows, f"{dataset_id}[{split}]", problem_field, answer_field)
