"""Score tables (the paper's Table 1 shape): rows = runs or models, columns = benchmarks, the best value
of each column marked. One in-memory table, three renderings: rich (terminal), Markdown, CSV."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

AVERAGE = "avg"
PIPED_WIDTH = 1000  # columns for output that is not a terminal: tables keep their natural width


def console(stderr: bool = False):
    """A rich Console for tables: on a terminal its width; piped or redirected (where rich would assume
    80 columns and cut run names to `runs/aent-…/fi…`) wide enough for any table, unless $COLUMNS says."""
    import os

    from rich.console import Console

    out = Console(stderr=stderr)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out = Console(stderr=stderr, width=PIPED_WIDTH)
    return out


@dataclass
class Row:
    label: str
    values: Dict[str, Optional[float]]  # column key -> score (None = not measured)
    info: Dict[str, str] = field(default_factory=dict)  # extra text columns (run id, checkpoint, ...)


@dataclass
class ScoreTable:
    columns: List[Tuple[str, str]]  # (key, header)
    rows: List[Row]
    info_columns: List[str] = field(default_factory=list)
    digits: int = 3
    mark_best: bool = True  # False when rows are not competitors (one model's benchmarks)
    # Info columns shortened to this many characters in the terminal and Markdown (CSV keeps them whole).
    short_info: Dict[str, int] = field(default_factory=lambda: {"run": 8})

    def best(self) -> Dict[str, float]:
        """Best (highest) value per column, for the columns that have any value."""
        out: Dict[str, float] = {}
        for key, _ in self.columns:
            values = [row.values.get(key) for row in self.rows if row.values.get(key) is not None]
            if values:
                out[key] = max(values)
        return out

    def is_best(self, row: Row, key: str) -> bool:
        value = row.values.get(key)
        # A column with a single row has nothing to compare against: mark nothing.
        return (self.mark_best and value is not None and len(self.rows) > 1
                and value == self.best().get(key))

    def fmt(self, value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.{self.digits}f}"

    def info_text(self, row: Row, name: str) -> str:
        text = row.info.get(name, "")
        return text[:self.short_info[name]] if name in self.short_info else text


def with_average(columns: Sequence[Tuple[str, str]], rows: Sequence[Row]) -> Tuple[List[Tuple[str, str]], List[Row]]:
    """Add an `avg` column: the mean over the score columns, only for rows that have all of them
    (an average over different benchmark sets would not compare)."""
    keys = [key for key, _ in columns]
    out = []
    for row in rows:
        values = [row.values.get(key) for key in keys]
        mean = sum(values) / len(values) if keys and all(v is not None for v in values) else None
        out.append(Row(row.label, {**row.values, AVERAGE: mean}, dict(row.info)))
    return list(columns) + [(AVERAGE, "Avg")], out


def to_markdown(table: ScoreTable, title: Optional[str] = None) -> str:
    headers = [""] + [header for _, header in table.columns] + table.info_columns
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * len(table.columns)
                                                              + ["---"] * len(table.info_columns)) + "|"]
    for row in table.rows:
        cells = [row.label]
        for key, _ in table.columns:
            text = table.fmt(row.values.get(key))
            cells.append(f"**{text}**" if table.is_best(row, key) else text)
        cells += [table.info_text(row, name) for name in table.info_columns]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    if table.mark_best and len(table.rows) > 1:
        lines.append("")
        lines.append("Bold: best in its column.")
    return "\n".join(lines) + "\n"


def to_csv(table: ScoreTable) -> str:
    """Full-precision values; `best_in` lists the columns where the row is best."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label"] + [key for key, _ in table.columns] + table.info_columns + ["best_in"])
    for row in table.rows:
        values = ["" if row.values.get(key) is None else repr(float(row.values[key])) for key, _ in table.columns]
        best = [key for key, _ in table.columns if table.is_best(row, key)]
        writer.writerow([row.label] + values + [row.info.get(name, "") for name in table.info_columns]
                        + [";".join(best)])
    return buffer.getvalue()


def to_rich(table: ScoreTable, title: Optional[str] = None):
    """A rich Table. Labels, headers, info cells and the title are user text (run names, overrides such
    as `eval.benchmarks=[math500,aime24]`): escaped, so rich never reads `[...]` in them as markup."""
    from rich.markup import escape
    from rich.table import Table

    out = Table(title=None if title is None else escape(title), title_justify="left")
    out.add_column("", style="bold", overflow="fold")  # a narrow terminal wraps names instead of cutting them
    for _, header in table.columns:
        out.add_column(escape(header), justify="right")
    for name in table.info_columns:
        out.add_column(escape(name), style="dim", overflow="fold")
    for row in table.rows:
        cells = [escape(row.label)]
        for key, _ in table.columns:
            text = escape(table.fmt(row.values.get(key)))
            cells.append(f"[bold green]{text}[/]" if table.is_best(row, key) else text)
        out.add_row(*cells, *[escape(table.info_text(row, name)) for name in table.info_columns])
    return out
