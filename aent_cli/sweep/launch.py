"""Run the jobs with a Hydra launcher plugin, driven from the compose API.

The launcher is chosen the Hydra way, by the `hydra/launcher` config group: `basic` (Hydra's local,
sequential launcher; the default), `joblib` (local processes; what `--jobs N` selects), or a cluster
plugin such as `submitit_slurm` (pip install hydra-submitit-launcher) with its own `hydra.launcher.*`
settings. Each job is composed by the launcher from the same overrides `aent train` would take.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from aent_cli.errors import ConfigError
from aent_cli.sweep.hydra_session import hydra_message, hydra_session


@dataclass
class LaunchOptions:
    sweep_dir: Path  # Hydra's per-job output folders (.hydra/ config snapshots, the job's log)
    n_jobs: int = 1
    hydra_overrides: Sequence[str] = ()  # hydra/launcher=..., hydra.launcher.*=... from the user

    @property
    def launcher_chosen(self) -> bool:
        return any(item.split("=", 1)[0].lstrip("+") == "hydra/launcher" for item in self.hydra_overrides)

    def launcher_name(self) -> str:
        for item in self.hydra_overrides:
            key, _, value = item.partition("=")
            if key.lstrip("+") == "hydra/launcher":
                return value
        return "joblib" if self.n_jobs > 1 else "basic"


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hydra_overrides(options: LaunchOptions) -> List[str]:
    out = [f"hydra.sweep.dir={_quoted(str(Path(options.sweep_dir).resolve()))}",
           "hydra.sweep.subdir=${hydra.job.num}", "hydra.job.chdir=False", "hydra.job.name=aent"]
    if not options.launcher_chosen and options.n_jobs > 1:
        out += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={options.n_jobs}"]
    return out + list(options.hydra_overrides)


def launch(jobs: Sequence[Sequence[str]], task: Callable, options: LaunchOptions) -> list:
    """Hydra JobReturns, one per job in order (status COMPLETED or FAILED with the exception)."""
    from hydra import compose
    from hydra._internal.callbacks import Callbacks
    from hydra.core.plugins import Plugins
    from hydra.errors import HydraException
    from hydra.types import HydraContext
    from omegaconf.errors import OmegaConfBaseException

    with hydra_session() as loader:
        try:
            master = compose("config", overrides=hydra_overrides(options), return_hydra_config=True)
            context = HydraContext(config_loader=loader, callbacks=Callbacks(master))
            launcher = Plugins.instance().instantiate_launcher(hydra_context=context, task_function=task,
                                                               config=master)
        except (HydraException, OmegaConfBaseException, ImportError) as exc:
            hint = ""
            if "submitit" in options.launcher_name():
                hint = " (the Slurm launcher needs: pip install hydra-submitit-launcher)"
            name = options.launcher_name()
            raise ConfigError(f"cannot set up launcher {name!r}: {hydra_message(exc)}{hint}") from None
        return list(launcher.launch([list(job) for job in jobs], initial_job_idx=0))


def job_error(job_return) -> Optional[BaseException]:
    """The exception a failed job raised (Hydra keeps it as the return value), else None."""
    from hydra.core.utils import JobStatus

    if job_return is None or job_return.status != JobStatus.FAILED:
        return None
    return job_return._return_value  # the public property re-raises it


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:500]


__all__ = ["LaunchOptions", "launch", "job_error", "describe", "hydra_message"]
