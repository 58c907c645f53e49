"""The paper's six benchmarks as plain data: name, the column title of Table 1 (in the paper's order),
the shared JSONL file, the Hugging Face `datasets` id and fields, the row count. Loading them is
`eval/benchmarks.py`; the report reads titles and order from here (no import of eval)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str  # column header in tables (the paper's spelling)
    file: str  # default file name under eval.data_dir
    hub_id: str  # Hugging Face datasets id for `--bench name=hub`
    hub_split: str
    hub_problem_field: str
    # A hub row without this field takes the last \boxed{} of its `solution` (MATH-Hard on the hub).
    hub_answer_field: str
    # A fixed prompt template for this benchmark; `auto` defers to model.prompt_template (all six do).
    template: str = "auto"
    size: Optional[int] = None  # rows in the shared JSONL file (checked by the tests)


# Order = the paper's Table 1 columns.
BENCHMARKS: Dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("math_hard", "MATH-Hard", "math_hard.jsonl", "lighteval/MATH-Hard", "test", "problem", "answer",
              size=1324),
    Benchmark("math500", "MATH-500", "math500.jsonl", "HuggingFaceH4/MATH-500", "test", "problem", "answer",
              size=500),
    Benchmark("aime24", "AIME24", "aime24.jsonl", "HuggingFaceH4/aime_2024", "train", "problem", "answer", size=30),
    Benchmark("minerva", "Minerva", "minerva.jsonl", "math-ai/minervamath", "test", "question", "answer", size=272),
    Benchmark("olympiadbench", "Olympiad", "olympiadbench.jsonl", "math-ai/olympiadbench", "test", "question",
              "final_answer", size=675),
    Benchmark("amc23", "AMC", "amc23.jsonl", "math-ai/amc23", "test", "question", "answer", size=40),
]}
