"""The paper's benchmarks by name: where each one's problems come from and how its prompts are built.

Each benchmark reads from a local JSONL file (`<eval.data_dir>/<file>`, the default; the repo's
shared/data/benchmarks has all six) or, for users online, from its Hugging Face `datasets` id. A
source is chosen per benchmark with `--bench name=PATH_OR_HUB_ID` or `--bench name=hub`. The registry
itself (names, titles, files, hub ids) is plain data in `data/benchmarks.py`.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from aent_cli.data.benchmarks import BENCHMARKS, Benchmark
from aent_cli.data.problem import Problem
from aent_cli.data.sources import load_problems, looks_like_hub_id
from aent_cli.errors import UserError


class BenchmarkError(UserError):
    """An unknown benchmark name or a benchmark source that does not exist."""


ALL = "all"


@dataclass(frozen=True)
class BenchSource:
    """Where one benchmark's problems will be read from, checked before any model is loaded."""
    bench: Benchmark
    spec: str  # a JSONL path or a hub id
    is_hub: bool

    def describe(self) -> str:
        return f"{self.spec} (hub)" if self.is_hub else self.spec


def benchmark_names(requested: Sequence[str]) -> List[Tuple[str, Optional[str]]]:
    """`["math500", "aime24=/p.jsonl", "all"]` -> [(name, source or None), ...], in request order,
    without duplicates; `all` expands to the six in the paper's order."""
    out: Dict[str, Optional[str]] = {}
    for item in requested:
        name, _, source = item.partition("=")
        name = name.strip()
        if name == ALL:
            for key in BENCHMARKS:
                out.setdefault(key, None)
            continue
        if name not in BENCHMARKS:
            close = difflib.get_close_matches(name, [*BENCHMARKS, ALL], n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise BenchmarkError(f"unknown benchmark {name!r}: {hint}choose from {', '.join(BENCHMARKS)} or all")
        out[name] = source.strip() or None
    if not out:
        raise BenchmarkError("no benchmark selected: pass --bench NAME (or eval.benchmarks=[...])")
    return list(out.items())


def resolve_source(name: str, source: Optional[str], data_dir: str,
                   overrides: Optional[Dict[str, str]] = None) -> BenchSource:
    """The JSONL path or hub id for one benchmark. Local paths must exist; `hub` means the registry's id;
    any other value that is not an existing file and looks like `org/name` is taken as a hub id."""
    bench = BENCHMARKS[name]
    source = source or (overrides or {}).get(name)
    if source is None:
        path = Path(data_dir).expanduser() / bench.file
        if not path.is_file():
            raise BenchmarkError(f"benchmark {name}: file {path} not found (set eval.data_dir, AENT_DATA_DIR, "
                                 f"or pass --bench {name}=PATH or --bench {name}=hub)")
        return BenchSource(bench, str(path), is_hub=False)
    if source == "hub":
        return BenchSource(bench, bench.hub_id, is_hub=True)
    path = Path(source).expanduser()
    if path.is_file():
        return BenchSource(bench, str(path), is_hub=False)
    if looks_like_hub_id(source) and not source.startswith((".", "~")):
        return BenchSource(bench, source, is_hub=True)
    raise BenchmarkError(f"benchmark {name}: {source} is neither a file nor a Hugging Face dataset id")


def load_benchmark(source: BenchSource, limit: Optional[int] = None) -> List[Problem]:
    """The benchmark's problems (the first `limit` of them); DataError for a malformed file."""
    bench = source.bench
    if source.is_hub:
        problems = load_problems(source.spec, split=bench.hub_split, problem_field=bench.hub_problem_field,
                                 answer_field=bench.hub_answer_field)
    else:
        problems = load_problems(source.spec, problem_field="problem", answer_field="answer")
    return problems[:limit] if limit else problems
