"""`aent sweep [SWEEP_FILE] [OVERRIDES...]`: a Hydra multirun of training jobs, one MLflow child run each."""
from __future__ import annotations

from typing import List, Optional, Tuple

import typer

from aent_cli.cli.common import user_errors
from aent_cli.errors import ConfigError

SWEEP_ARGS_HELP = ("An optional sweep file (a name in sweeps/ such as `p`, or a path), then Hydra overrides; "
                   "comma lists, range() and choice() sweep: 'algo.p=0.2,0.33' trainer.seed=range(3). "
                   "hydra/launcher=... and hydra.launcher.*=... pick and configure the launcher.")
JOBS_HELP = "Run N jobs at once in local processes (Hydra's joblib launcher)."
DRY_RUN_HELP = "Print the expanded, validated jobs and exit."


def split_file_arg(args: List[str]) -> Tuple[Optional[str], List[str]]:
    """The first argument names a sweep file when it is not an override (no `=`, not `~key`)."""
    if args and "=" not in args[0] and not args[0].startswith("~"):
        return args[0], args[1:]
    return None, args


def sweep_command(
    args: Optional[List[str]] = typer.Argument(None, help=SWEEP_ARGS_HELP, metavar="[SWEEP_FILE] [OVERRIDES]..."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help=JOBS_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """Run a Hydra multirun (sweeps/p.yaml, bounds.yaml, methods.yaml, or inline overrides)."""
    from aent_cli.sweep import plan_sweep

    sweep_file, overrides = split_file_arg(list(args or []))
    with user_errors():
        for extra in overrides:
            if "=" not in extra and not extra.startswith("~"):
                raise ConfigError(f"unexpected argument {extra!r}: only the first argument may name a sweep file")
        plan = plan_sweep(sweep_file, overrides, n_jobs=jobs)
    execute(plan, jobs, dry_run)


SHOWN_AT_EACH_END = 20  # a grid of more than twice this many jobs prints its first and last ones


def grid_summary(jobs) -> str:
    """`trainer.seed: 3000 values, algo.p: 3 values` for the keys whose override differs between jobs."""
    from aent_cli.sweep.spec import override_key, varying_keys

    values: dict = {}
    for job in jobs:
        for item in job.overrides:
            values.setdefault(override_key(item), set()).add(item)
    return ", ".join(f"{key}: {len(values[key])} value(s)" for key in varying_keys(jobs))


def print_jobs(plan, console) -> None:
    """The jobs as a table; for more than 2 * SHOWN_AT_EACH_END jobs, the first and last
    SHOWN_AT_EACH_END of them and what varies (rendering thousands of rows takes longer than the plan)."""
    from rich.markup import escape
    from rich.table import Table

    jobs = plan.jobs
    shown = jobs if len(jobs) <= 2 * SHOWN_AT_EACH_END else jobs[:SHOWN_AT_EACH_END] + jobs[-SHOWN_AT_EACH_END:]
    title = f"{plan.name}: {len(jobs)} job(s)"
    if len(shown) < len(jobs):
        title += f", the first and last {SHOWN_AT_EACH_END} shown"
    table = Table(title=escape(title), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("label")
    table.add_column("overrides", style="dim")
    for position, job in enumerate(shown):
        if len(shown) < len(jobs) and position == SHOWN_AT_EACH_END:
            table.add_row("...", f"{len(jobs) - len(shown)} more job(s)", "")
        table.add_row(str(job.index), escape(job.label), escape(job.text))  # user text: no markup
    console.print(table)
    if len(shown) < len(jobs):
        console.print(escape(f"{len(jobs)} jobs vary {grid_summary(jobs)}"), highlight=False)


def execute(plan, jobs: int, dry_run: bool) -> None:
    """Shared by `aent sweep` and `aent ablate`: run, print the summary, exit non-zero on failure."""
    from rich.console import Console

    from aent_cli.sweep import SweepInterrupted, run_sweep
    from aent_cli.sweep.summary import for_terminal
    from aent_cli.tracking import tables
    from aent_cli.tracking.tables import to_rich

    console, err = tables.console(), Console(stderr=True)
    if dry_run:
        print_jobs(plan, console)
        return
    try:
        with user_errors():
            result = run_sweep(plan, n_jobs=jobs,
                               notify=lambda message: err.print(message, highlight=False, markup=False))
    except SweepInterrupted as stop:
        console.print(to_rich(for_terminal(stop.result.table), title=f"{stop.result.run_name} (interrupted)"))
        typer.echo(f"interrupted: finished jobs are kept; unfinished ones are marked KILLED "
                   f"(parent run {stop.result.parent_run_id})", err=True)
        raise typer.Exit(code=130)
    console.print(to_rich(for_terminal(result.table), title=result.run_name))
    for path in result.files:
        err.print(f"wrote {path}", highlight=False, markup=False)
    err.print(f"parent run {result.parent_run_id}: {len(result.outcomes)} job(s), status {result.status}",
              highlight=False, markup=False)
    if result.launch_error:
        typer.echo(f"error: the launcher stopped the sweep: {result.launch_error}", err=True)
    if result.failed:
        names = "; ".join(f"#{o.job.index} {o.label} ({o.status}{': ' + o.error if o.error else ''})"
                          for o in result.failed)
        typer.echo(f"error: {len(result.failed)} of {len(result.outcomes)} sweep job(s) did not finish: {names}",
                   err=True)
    if result.failed or result.launch_error:
        raise typer.Exit(code=1)
