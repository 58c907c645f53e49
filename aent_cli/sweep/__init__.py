"""`aent sweep` / `aent ablate`: Hydra-style multiruns of training jobs as nested MLflow runs."""
from aent_cli.sweep.ablations import ABLATIONS, get_ablation
from aent_cli.sweep.runner import SweepInterrupted, SweepPlan, SweepResult, plan_sweep, run_sweep
from aent_cli.sweep.spec import Job, expand_jobs, load_sweep_file

__all__ = ["ABLATIONS", "get_ablation", "SweepInterrupted", "SweepPlan", "SweepResult", "plan_sweep", "run_sweep",
           "Job", "expand_jobs", "load_sweep_file"]
