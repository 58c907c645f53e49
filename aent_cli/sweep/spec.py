"""What a sweep runs: a sweep file plus command-line overrides, expanded into jobs with Hydra's own
override grammar (comma lists, range(), choice(), glob()) and its BasicSweeper's cartesian product.

A sweep file (in `sweeps/`, or any path) has up to three keys:

    overrides: [algo=aent]                # applied to every job
    hydra:
      sweeper:
        params:                           # Hydra's sweeper params: the cartesian product
          algo.p: 0.1,0.2,0.33,0.5
          trainer.seed: range(3)
    jobs:                                 # explicit override sets, for values that go together
      - [algo.h_low=0.10, algo.h_high=0.20]
      - label: wide band                  # optional name for figures and tables
        overrides: [algo.h_low=0.05, algo.h_high=0.30]

The jobs are every set (itself expanded, so a set may sweep) crossed with the params product.
Command-line overrides win over the file: one whose key a set defines replaces it in those sets
only; any other joins the product (and replaces a param or fixed override of the same key).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import yaml

from aent_cli.config.compose import project_path
from aent_cli.errors import ConfigError
from aent_cli.sweep.hydra_session import hydra_message

_FILE_KEYS = {"overrides", "hydra", "jobs"}


@dataclass
class JobSet:
    overrides: List[str]
    label: Optional[str] = None


@dataclass
class SweepFile:
    name: str
    path: Optional[Path] = None
    params: Dict[str, str] = field(default_factory=dict)
    overrides: List[str] = field(default_factory=list)
    job_sets: List[JobSet] = field(default_factory=list)


@dataclass
class Job:
    index: int
    overrides: List[str]
    label: str = ""
    set_index: int = 0

    @property
    def text(self) -> str:
        return " ".join(self.overrides)


def available_sweeps() -> List[str]:
    return sorted(p.stem for p in project_path("sweeps").glob("*.yaml"))


def resolve_sweep_file(spec: str) -> Path:
    """A path to a YAML file, or the name of one in `sweeps/` (`p` or `p.yaml`)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    name = spec if spec.endswith((".yaml", ".yml")) else f"{spec}.yaml"
    candidate = project_path("sweeps") / name
    if candidate.is_file():
        return candidate
    raise ConfigError(f"no sweep file {spec!r}: not a file, and sweeps/ has: {', '.join(available_sweeps())}")


def _scalar(value, where: str) -> str:
    if isinstance(value, (list, dict)):
        raise ConfigError(f"{where}: expected a Hydra override value such as 0.1,0.2 or range(3), got {value!r}")
    if value is None:
        return "null"
    return str(value)


def _override_list(value, where: str) -> List[str]:
    """A list of override strings; a {key: value} mapping is accepted too."""
    if isinstance(value, dict):
        return [f"{k}={_scalar(v, where)}" for k, v in value.items()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of overrides like [algo=aent, algo.p=0.2], got {value!r}")
    return list(value)


def parse_sweep_file(data, path: Optional[Path], name: str) -> SweepFile:
    where = str(path) if path else name
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a sweep file is a mapping with keys {sorted(_FILE_KEYS)}")
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; a sweep file has {sorted(_FILE_KEYS)}")
    hydra = data.get("hydra") or {}
    if not isinstance(hydra, dict) or set(hydra) - {"sweeper"} or set(hydra.get("sweeper") or {}) - {"params"}:
        raise ConfigError(f"{where}: only hydra.sweeper.params is read from a sweep file; pass launcher "
                          f"settings on the command line (hydra/launcher=..., hydra.launcher.*=...)")
    params_node = (hydra.get("sweeper") or {}).get("params") or {}
    if not isinstance(params_node, dict):
        raise ConfigError(f"{where}: hydra.sweeper.params must map keys to values, got {params_node!r}")
    params = {str(k): _scalar(v, f"{where}: hydra.sweeper.params.{k}") for k, v in params_node.items()}
    overrides = _override_list(data.get("overrides") or [], f"{where}: overrides")
    job_entries = data.get("jobs") or []
    if not isinstance(job_entries, list):
        raise ConfigError(f"{where}: jobs must be a list of override sets, got {job_entries!r}")
    sets = []
    for i, entry in enumerate(job_entries):
        at = f"{where}: jobs[{i}]"
        if isinstance(entry, dict) and "overrides" in entry:
            if set(entry) - {"overrides", "label"}:
                raise ConfigError(f"{at}: a job set has `overrides` and an optional `label`")
            label = str(entry["label"]) if entry.get("label") else None
            sets.append(JobSet(_override_list(entry["overrides"], at), label))
        else:
            sets.append(JobSet(_override_list(entry, at)))
    return SweepFile(name=name, path=path, params=params, overrides=overrides, job_sets=sets)


def load_sweep_file(spec: str) -> SweepFile:
    path = resolve_sweep_file(spec)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_sweep_file(data, path, path.stem)


def _parse(parser, items: Sequence[str], where: str):
    from hydra.errors import HydraException

    try:
        return parser.parse_overrides(list(items))
    except HydraException as exc:
        raise ConfigError(f"bad override in {where}: {hydra_message(exc)}") from None


MAX_JOBS = 10_000  # one sweep; a 9,000-job grid plans in minutes, a million would take hours


def _product(parsed) -> List[List[str]]:
    """BasicSweeper's expansion: one list per key (the sweep's values), then their product; a later
    override of the same key replaces an earlier one."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.errors import HydraException

    size = _grid_size(parsed)
    if size > MAX_JOBS:
        raise ConfigError(f"the sweep expands to {size:,} jobs (at most {MAX_JOBS:,}): split it into smaller sweeps")
    try:
        return BasicSweeper.split_arguments(list(parsed), None)[0]
    except HydraException as exc:
        raise ConfigError(f"cannot expand the sweep: {hydra_message(exc)}") from None


def _grid_size(parsed) -> int:
    """Jobs the product of these overrides' sweeps makes, counted without expanding them (a
    range(10**9) would not fit in memory); glob sweeps count 1 here. ConfigError on a zero range step."""
    size = 1
    for override in parsed:
        if not override.is_sweep_override():
            continue
        value = override.value()
        if hasattr(value, "step"):  # RangeSweep
            if value.step == 0:
                raise ConfigError(f"{override.key_or_group}: range() with step 0")
            size *= max(0, math.ceil((value.stop - value.start) / value.step))
        elif hasattr(value, "list"):  # ChoiceSweep
            size *= len(value.list)
    return size


def override_key(item: str) -> str:
    return item.split("=", 1)[0]


def expand_jobs(sweep: SweepFile, cli: Sequence[str], config_loader=None) -> List[Job]:
    """Every job's override list, in order: sets (file order) x the params product."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create(config_loader=config_loader)
    cli_parsed = _parse(parser, cli, "the command line")
    set_keys = {o.get_key_element() for s in sweep.job_sets for o in _parse(parser, s.overrides, sweep.name)}
    into_sets = {o.get_key_element(): o for o in cli_parsed if o.get_key_element() in set_keys}
    grid_items = list(sweep.overrides) + [f"{k}={v}" for k, v in sweep.params.items()]
    cli_rest = [o for o in cli_parsed if o.get_key_element() not in set_keys]
    grid_parsed = _parse(parser, grid_items, sweep.name) + cli_rest
    grid = _product(grid_parsed)
    fixed_keys = {override_key(x) for x in sweep.overrides}

    jobs: List[Job] = []
    for set_index, job_set in enumerate(sweep.job_sets or [JobSet([])]):
        parsed = [into_sets.get(o.get_key_element(), o) for o in _parse(parser, job_set.overrides, sweep.name)]
        for combo, rest in itertools.product(_product(parsed), grid):
            clash = {override_key(x) for x in combo} & {override_key(x) for x in rest}
            if clash:
                raise ConfigError(f"{sweep.name}: {', '.join(sorted(clash))} is set both in jobs[{set_index}] and "
                                  f"in the sweep's params/overrides; set it in one place")
            # The file's fixed overrides first (algo=aent), then what the set and the grid vary.
            head = [x for x in rest if override_key(x) in fixed_keys]
            tail = [x for x in rest if override_key(x) not in fixed_keys]
            jobs.append(Job(len(jobs), head + list(combo) + tail, set_index=set_index))
    _label(jobs, sweep.job_sets)
    return jobs


def _values_by_key(jobs: Sequence[Job]) -> Dict[str, set]:
    out: Dict[str, set] = {}
    for job in jobs:
        for item in job.overrides:
            out.setdefault(override_key(item), set()).add(item)
    return out


def varying_keys(jobs: Sequence[Job]) -> List[str]:
    """Keys whose override differs between jobs (or that some jobs lack), in first-seen order."""
    values = _values_by_key(jobs)
    order = list(dict.fromkeys(override_key(x) for job in jobs for x in job.overrides))
    keys_per_job = [{override_key(x) for x in job.overrides} for job in jobs]
    return [k for k in order if len(values[k]) > 1 or any(k not in keys for keys in keys_per_job)]


def _label(jobs: List[Job], sets: Sequence[JobSet]) -> None:
    """A short name per job: its set's label (if any) plus the overrides that tell it apart."""
    varying = set(varying_keys(jobs))
    by_set: Dict[int, List[Job]] = {}
    for job in jobs:
        by_set.setdefault(job.set_index, []).append(job)
    same_in_set = {index: {k for k, v in _values_by_key(members).items() if len(v) == 1}
                   for index, members in by_set.items() if sets and sets[index].label}
    for job in jobs:
        named = sets[job.set_index].label if sets else None
        same = same_in_set.get(job.set_index, set()) if named else set()
        parts = ([named] if named else []) + [x for x in job.overrides
                                              if override_key(x) in varying and override_key(x) not in same]
        job.label = " ".join(parts) or job.text or f"job {job.index}"
