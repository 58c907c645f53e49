"""A sweep from start to end: plan (expand + validate every job before anything runs), open the parent
MLflow run, launch the jobs, then close stray children and leave the summary on the parent."""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from aent_cli.config import compose_config, keys, validate
from aent_cli.errors import ConfigError
from aent_cli.sweep import runs, summary
from aent_cli.sweep.ablations import Ablation
from aent_cli.sweep.hydra_session import hydra_message, hydra_session
from aent_cli.sweep.launch import LaunchOptions, describe, hydra_overrides, job_error, launch
from aent_cli.sweep.spec import Job, SweepFile, expand_jobs, load_sweep_file
from aent_cli.sweep.task import SweepTask
from aent_cli.tracking import store, tags as tag


@dataclass
class SweepPlan:
    sweep: SweepFile
    jobs: List[Job]
    job_overrides: List[str]  # the command line's overrides for the jobs
    hydra_overrides: List[str]  # the command line's hydra/launcher=..., hydra.launcher.*=...
    tracking_uri: str  # absolute, shared by every job
    experiment: str
    output_dir: Path
    ablation: Optional[Ablation] = None

    @property
    def name(self) -> str:
        return f"ablate-{self.ablation.name}" if self.ablation else self.sweep.name


@dataclass
class SweepResult:
    parent_run_id: str
    run_name: str
    status: str  # FINISHED | FAILED | KILLED
    outcomes: List[summary.JobOutcome]
    table: summary.SweepTable
    files: List[Path] = field(default_factory=list)
    sweep_dir: Optional[Path] = None
    launch_error: Optional[str] = None  # the launcher itself broke (e.g. a job's config no longer composes)

    @property
    def failed(self) -> List[summary.JobOutcome]:
        return [o for o in self.outcomes if o.status != "FINISHED"]


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep, after the bookkeeping: carries what was finished."""

    def __init__(self, result: SweepResult) -> None:
        super().__init__("sweep interrupted")
        self.result = result


def split_cli(items: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(job overrides, Hydra's own hydra.* / hydra/... overrides for the launcher)."""
    jobs, hydra = [], []
    for item in items:
        key = item.split("=", 1)[0].lstrip("+~")
        (hydra if key == "hydra" or key.startswith(("hydra.", "hydra/")) else jobs).append(item)
    return jobs, hydra


def absolute_uri(uri: str) -> str:
    """A local store's URI made absolute, so jobs in other working directories write the same store."""
    return store.absolute_uri(uri)


def _validated(job: Job):
    try:
        return validate(compose_config(job.overrides))
    except ConfigError as exc:
        raise ConfigError(f"sweep job #{job.index} ({job.label}): {exc}") from None


def _is_value_override(text: str) -> bool:
    """`trainer.seed=3`-style: a plain value change of a dotted key (no group, no +/~ prefix, no @)."""
    key = text.split("=", 1)[0]
    return "=" in text and "." in key and not key.startswith(("+", "~")) and "/" not in key and "@" not in key


class _Base:
    """A composed config for one set of group / +/~ overrides, and a working copy that each job's value
    overrides are applied to and then taken back out of (the composed raw values, interpolations kept)."""

    def __init__(self, cfg) -> None:
        self.cfg, self.work, self.raw = cfg, copy.deepcopy(cfg), {}

    def original(self, key: str):
        from omegaconf import OmegaConf

        if key not in self.raw:
            section, _, leaf = key.rpartition(".")
            self.raw[key] = OmegaConf.to_container(OmegaConf.select(self.cfg, section), resolve=False)[leaf]
        return self.raw[key]

    def restore(self, keys) -> None:
        from omegaconf import OmegaConf

        for key in keys:
            OmegaConf.update(self.work, key, self.original(key), merge=False)


def validate_jobs(jobs: Sequence[Job]) -> Iterator:
    """Every job's composed, validated config, in order, as `_validated` gives it, without a Hydra
    compose per job (about a second each: hours for a 9,000-job grid): one compose per distinct set of
    group / +/~ overrides, then per job its value overrides (schema keys, each parsed once) applied the
    way Hydra's compose applies them, to a working copy that is restored after the job. A job off this
    path (or failing on it) is composed in full: its exact one-line error, naming the job. Each config
    yielded is valid until the next is requested (copy it to keep it)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    bases: dict = {}
    parsed: dict = {}
    known: dict = {}
    for job in jobs:
        values = [text for text in job.overrides if _is_value_override(text)]
        rest = tuple(text for text in job.overrides if not _is_value_override(text))
        names = [text.split("=", 1)[0] for text in values]
        for name in names:
            if name not in known:
                known[name] = keys.lookup(name)[0] == "known"
        if len(set(names)) < len(names) or not all(known[name] for name in names):
            yield _validated(job)
            continue
        base = None
        try:
            if rest not in bases:
                bases[rest] = _Base(compose_config(list(rest)))
            base = bases[rest]
            for text in values:
                if text not in parsed:
                    parsed[text] = parser.parse_overrides([text])[0]
            ConfigLoaderImpl._apply_overrides_to_config([parsed[text] for text in values], base.work)
            cfg = validate(base.work)
        except Exception:  # noqa: BLE001 - the full compose says what is wrong, or succeeds
            cfg = _validated(job)
        yield cfg
        if base is not None:
            base.restore(names)


def check_launcher(hydra_items: Sequence[str], n_jobs: int) -> None:
    """Compose the launcher's config now, so a missing plugin or a bad hydra.* key fails before any job."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    options = LaunchOptions(Path("."), n_jobs, list(hydra_items))
    with hydra_session():
        try:
            compose("config", overrides=hydra_overrides(options), return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as exc:
            hint = " (pip install hydra-submitit-launcher)" if "submitit" in options.launcher_name() else ""
            raise ConfigError(f"launcher {options.launcher_name()!r}: {hydra_message(exc)}{hint}") from None


def plan_sweep(sweep_spec: Optional[str], overrides: Sequence[str] = (), ablation: Optional[Ablation] = None,
               n_jobs: int = 1) -> SweepPlan:
    """Expand and validate every job (a bad override names its job and fails here, before any run)."""
    if n_jobs < 1:
        raise ConfigError(f"--jobs={n_jobs} is out of range: >= 1")
    sweep = load_sweep_file(sweep_spec) if sweep_spec else SweepFile(name="inline")
    job_items, hydra_items = split_cli(list(overrides))
    with hydra_session() as loader:
        jobs = expand_jobs(sweep, job_items, loader)
    seen: dict = {"uri": set(), "experiment": set()}
    first = None
    for cfg in validate_jobs(jobs):
        first = first if first is not None else copy.deepcopy(cfg)
        for key, values in seen.items():
            values.add(str(cfg.tracking[key]))
    for key, values in seen.items():
        if len(values) > 1:
            raise ConfigError(f"tracking.{key} differs between the sweep's jobs ({', '.join(sorted(values))}): "
                              f"a sweep records to one store and experiment")
    check_launcher(hydra_items, n_jobs)
    return SweepPlan(sweep, jobs, job_items, hydra_items, absolute_uri(store.tracking_uri(first.tracking.uri)),
                     first.tracking.experiment, Path(first.trainer.output_dir), ablation)


def run_sweep(plan: SweepPlan, n_jobs: int = 1, quiet: Optional[bool] = None,
              notify: Callable[[str], None] = lambda message: None) -> SweepResult:
    """Run every job; returns when all have ended. Failed jobs do not stop the others; Ctrl-C raises
    SweepInterrupted after the unfinished child runs are marked KILLED and the summary is written.
    A launcher that breaks (Hydra composes each job again in the worker: a conf/ file edited into a
    broken state mid-sweep) ends the sweep: its error is on the result and the parent run."""
    client = store.client(plan.tracking_uri)
    run_name = runs.sweep_run_name(plan.name)
    options = LaunchOptions(plan.output_dir / run_name, n_jobs, plan.hydra_overrides)
    launcher = options.launcher_name()
    tags = {tag.SWEEP_NAME: plan.name, tag.SWEEP_FILE: str(plan.sweep.path or ""),
            tag.SWEEP_LAUNCHER: launcher, tag.SWEEP_OVERRIDES: " ".join(plan.job_overrides)}
    if plan.ablation:
        tags[tag.ABLATION] = plan.ablation.name
    parent = runs.start_parent(client, plan.experiment, run_name, plan.jobs, tags)
    parallel = launcher != "basic"
    threads = max(1, (os.cpu_count() or 1) // n_jobs) if launcher == "joblib" and n_jobs > 1 else 0
    task = SweepTask(parent, plan.tracking_uri, run_name, {j.index: j.label for j in plan.jobs},
                     quiet=parallel if quiet is None else quiet, threads=threads)
    notify(f"sweep {run_name}: {len(plan.jobs)} job(s), launcher {launcher}, parent run {parent} "
           f"in {plan.tracking_uri}")

    returns: list = []
    interrupted, launch_failure = False, None
    try:
        returns = launch([job.overrides for job in plan.jobs], task, options)
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:  # noqa: BLE001 - the launcher itself broke: record it on the parent
        launch_failure = exc

    status = "KILLED" if interrupted else "FAILED"
    try:
        if launch_failure is not None:
            store.set_tags(client, parent, {tag.ERROR: describe(launch_failure)})
        errors = {i: describe(err) for i, r in enumerate(returns) if (err := job_error(r)) is not None}
        runs.close_unfinished(client, parent, status)
        outcomes = summary.collect(client, runs.children(client, parent), plan.jobs, errors)
        table = summary.summary_table(outcomes)
        out_dir = options.sweep_dir / "summary"
        files = summary.write_summary(table, out_dir) + summary.sweep_figures(outcomes, out_dir)
        if plan.ablation:
            files += plan.ablation.figure(outcomes, out_dir)
        summary.log_files(client, parent, files)
        ok = not interrupted and launch_failure is None and all(o.status == "FINISHED" for o in outcomes)
        status = "FINISHED" if ok else status
    finally:
        client.set_terminated(parent, status=status)
    result = SweepResult(parent, run_name, status, outcomes, table, files, options.sweep_dir,
                         describe(launch_failure) if launch_failure is not None else None)
    if interrupted:
        raise SweepInterrupted(result)
    return result
