"""`aent ablate NAME [OVERRIDES...]`: the paper's ablations as sweeps, with their figure on the parent run."""
from __future__ import annotations

from typing import List, Optional

import typer

from aent_cli.cli.common import user_errors
from aent_cli.cli.sweep_cmd import DRY_RUN_HELP, JOBS_HELP, execute

NAME_HELP = ("coef: adaptive vs constant coefficient (Fig. 5) | p: several p with GRPO and EntReg (Fig. 6) | "
             "methods: GRPO, EntReg and AEnt in one figure (also in reports/)")
OVERRIDES_HELP = ("Hydra overrides for every job (trainer.steps=10, +experiment=setting_a); an override of a key "
                  "the ablation sets replaces it: aent ablate p 'algo.p=0.2,0.5'.")


def ablate_command(
    name: str = typer.Argument(..., help=NAME_HELP),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help=JOBS_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """Run a named ablation of the paper (adaptive vs constant coefficient; different p; the three methods)."""
    from aent_cli.sweep import get_ablation, plan_sweep

    with user_errors():
        ablation = get_ablation(name)
        plan = plan_sweep(ablation.sweep_file, list(overrides or []), ablation=ablation, n_jobs=jobs)
        for line in arm_warnings(plan.jobs):
            typer.echo(f"warning: {line}", err=True)
    execute(plan, jobs, dry_run)


def arm_warnings(jobs) -> List[str]:
    """Why the ablation's arms would train identically (empty when they can differ); see arm_checks."""
    from aent_cli.config import compose_config
    from aent_cli.sweep.arm_checks import identical_arm_warnings

    configs = [compose_config(job.overrides) for job in jobs]
    first = configs[0].data
    train_size = first.arithmetic_train_size if first.train == "arithmetic" else 0
    return identical_arm_warnings([job.label or f"#{job.index}" for job in jobs], configs, train_size)
