"""The README's configuration table against the config `aent train` composes: every schema key is in the
table once, every default it states is the composed one, and a "(per <group>)" note is true."""
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from aent_cli.config import compose_config
from aent_cli.config.compose import group_options, project_path
from aent_cli.config.keys import known_keys

README = Path(__file__).resolve().parents[1] / "README.md"


def table_rows(text: str):
    """(keys, defaults cell) of each row of the table under "## Configuration"."""
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 3 or cells[0] in ("group / key", "---|---|---") or set(cells[0]) <= {"-", "|"}:
            continue
        yield re.findall(r"`([^`]+)`", cells[0]), cells[2]


def parse_default(cell: str):
    """`text` is a string; anything else is YAML (numbers, null, true, lists); "(...)" is a remark."""
    cell = remark_free(cell)
    if cell.startswith("`") and cell.endswith("`"):
        return cell[1:-1]
    return yaml.safe_load(cell)


def remark_free(cell: str) -> str:
    return re.sub(r"\s*\([^()]*\)\s*$", "", cell.strip())


def remark(cell: str) -> str:
    found = re.search(r"\(([^()]*)\)\s*$", cell.strip())
    return found.group(1) if found else ""


ROWS = list(table_rows(README.read_text()))
DEFAULT = OmegaConf.to_container(compose_config([]), resolve=False)
SECTIONS = {"algo", "model", "data", "rollout", "reward", "trainer", "eval", "tracking"}
DEFAULT_GROUPS = {k: v for item in OmegaConf.load(project_path("conf") / "config.yaml").defaults
                  if isinstance(item, dict) or OmegaConf.is_dict(item) for k, v in item.items()}


def composed(key: str, cfg=None):
    node = DEFAULT if cfg is None else cfg
    for part in key.split("."):
        node = node[part]
    return node


def test_the_table_parses():
    assert len(ROWS) > 40 and any(keys == ["algo.p"] for keys, _ in ROWS)


def test_every_schema_key_is_in_the_table_once():
    listed = [key for keys, _ in ROWS for key in keys if not key.endswith("=")]
    leaves = [k for k in known_keys() if k not in SECTIONS and k != "algo.coef"]
    assert sorted(set(listed) - set(leaves)) == []
    assert sorted(set(leaves) - set(listed)) == [], "keys missing from the README's configuration table"
    assert len(listed) == len(set(listed)), "a key is listed twice"


@pytest.mark.parametrize("keys,cell", ROWS, ids=[",".join(keys) for keys, _ in ROWS])
def test_each_stated_default_is_the_composed_one(keys, cell):
    if keys[0].endswith("="):  # a group: the option conf/config.yaml picks
        assert parse_default(cell) == DEFAULT_GROUPS[keys[0][:-1]]
        return
    values = [parse_default(part) for part in remark_free(cell).split(" / ")]
    assert len(values) == len(keys), f"{len(keys)} keys but {len(values)} defaults in {cell!r}"
    for key, value in zip(keys, values):
        assert composed(key) == value, f"README says {key} = {value!r}, aent train composes {composed(key)!r}"


PER_GROUP = [r for r in ROWS if remark(r[1]).startswith("per ")]


@pytest.mark.parametrize("keys,cell", PER_GROUP, ids=[",".join(keys) for keys, _ in PER_GROUP])
def test_a_per_group_note_is_true(keys, cell):
    group = remark(cell).split()[1]
    others = [compose_config([f"{group}={option}"]) for option in group_options()[group]]
    assert any(OmegaConf.select(cfg, key) != composed(key) for cfg in others for key in keys), (
        f"{keys} is the same for every {group} option: drop the (per {group}) note")


def test_the_parser_can_fail():
    rows = list(table_rows("## Configuration\n| `algo.p` | x | 0.5 |\n| `a`, `b` | y | 1 / `z` (per algo) |\n"))
    assert rows == [(["algo.p"], "0.5"), (["a", "b"], "1 / `z` (per algo)")]
    assert parse_default("0.5") != composed("algo.p")
    assert [parse_default(p) for p in remark_free(rows[1][1]).split(" / ")] == [1, "z"]
