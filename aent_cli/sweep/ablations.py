"""The paper's named ablations: a sweep file in `sweeps/` plus the figure drawn on the parent run.

- coef (Fig. 5): AEnt with the adaptive coefficient vs the same run with lambda held at coef.init.
- p (Fig. 6): AEnt at several clamping percentages, with GRPO and EntReg as reference lines.
- methods (Fig. 3/4): GRPO, EntReg and AEnt on the same default, one figure (tracking/methods_figure.py),
  also copied to reports/.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

from aent_cli.errors import ConfigError
from aent_cli.sweep.summary import CLAMPED, COEF, LENGTH, JobOutcome, best_key, best_vs_p, curves, score_key
from aent_cli.tracking import figures, methods_figure

METHODS_KEYS = ("actor/entropy", "actor/clamped_entropy", "actor/entropy_coef", "response_length/mean", "val/acc",
                "reward/mean")
REPORTS_DIR = Path("reports")


@dataclass(frozen=True)
class Ablation:
    name: str
    sweep_file: str  # in sweeps/
    title: str
    figure: Callable[[Sequence[JobOutcome], Path], List[Path]]


def _over_steps(outcomes: Sequence[JobOutcome]) -> List[figures.Panel]:
    score = score_key(outcomes)
    params = [o.params for o in outcomes]
    return [figures.Panel(curves(outcomes, score), "Score", score),
            figures.Panel(curves(outcomes, LENGTH), "Response length", "tokens"),
            figures.Panel(curves(outcomes, CLAMPED), "Clamped entropy", "H~ (nats)",
                          bands=figures.entropy_bands(params))]


def coef_figure(outcomes: Sequence[JobOutcome], out_dir: Path) -> List[Path]:
    """Fig. 5 with the coefficient itself as a fourth panel (between its bounds): what the arms vary."""
    coef = figures.Panel(curves(outcomes, COEF), "Entropy coefficient", "λ",
                         hlines=figures.coef_bounds([o.params for o in outcomes]))
    return [figures.plot_panels(_over_steps(outcomes) + [coef], out_dir / "fig5_adaptive_vs_constant_coef.png",
                                suptitle="AEnt: adaptive vs constant entropy coefficient",
                                smoothing=figures.DEFAULT_SMOOTHING)]


def p_figure(outcomes: Sequence[JobOutcome], out_dir: Path) -> List[Path]:
    panels = _over_steps(outcomes)
    versus_p = best_vs_p(outcomes)
    if versus_p:
        key = best_key(outcomes)
        panels.append(figures.Panel(versus_p, "Best score vs p", f"best {key}", xlabel="p (clamping percentage)",
                                    smoothable=False))
    return [figures.plot_panels(panels, out_dir / "fig6_clamping_percentage.png",
                                suptitle="AEnt at different clamping percentages p (GRPO, EntReg for reference)",
                                smoothing=figures.DEFAULT_SMOOTHING)]


def methods_figure_for(outcomes: Sequence[JobOutcome], out_dir: Path) -> List[Path]:
    """The methods figure on the parent run's summary, and a copy in reports/ for the reader."""
    import shutil

    curves = [methods_figure.MethodCurves(o.label, {k: o.histories.get(k, []) for k in METHODS_KEYS})
              for o in outcomes if o.histories]
    band, bounds = methods_figure.band_and_bounds({o.label: o.params for o in outcomes})
    path = methods_figure.plot_methods(curves, out_dir / "methods_grpo_entreg_aent.png", band=band, bounds=bounds)
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, REPORTS_DIR / path.name)
    return [path]


ABLATIONS: Dict[str, Ablation] = {a.name: a for a in [
    Ablation("coef", "ablate_coef", "Adaptive vs constant entropy coefficient (Fig. 5)", coef_figure),
    Ablation("p", "ablate_p", "Different clamping percentages p (Fig. 6)", p_figure),
    Ablation("methods", "ablate_methods", "GRPO vs EntReg vs AEnt on the default (Fig. 3/4)", methods_figure_for),
]}


def get_ablation(name: str) -> Ablation:
    if name not in ABLATIONS:
        raise ConfigError(f"unknown ablation {name!r}: choose one of {', '.join(ABLATIONS)}")
    return ABLATIONS[name]
